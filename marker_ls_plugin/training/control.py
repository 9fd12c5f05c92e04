"""How a training run is told to stop: one control object, as transformers' ``TrainerControl``.

Whoever runs the loop holds a ``TrainingControl`` and sets it (a user's cancel read from the database, a job's
time limit); the loop checks it before every forward pass and evaluation batch and stops with
``TrainingStopped``, saving nothing. There is no other way to stop: a caller that checks on its own (between
the steps of a run function that does not train) calls ``check()`` too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

CANCELLED = "cancelled"  # the user asked the run to stop
TIMEOUT = "timeout"  # the run ran past its time limit


class TrainingStopped(Exception):
    """Raised by ``TrainingControl.check()`` once the control says stop; ``reason`` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class TrainingControl:
    """Whether training should stop, and why. ``stop`` may be called from another thread (a heartbeat)."""

    should_training_stop: bool = False
    reason: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def stop(self, reason: str) -> None:
        """Ask training to stop; the first reason given is kept."""
        with self._lock:
            if not self.should_training_stop:
                self.should_training_stop, self.reason = True, reason

    def check(self) -> None:
        """Raise TrainingStopped when training should stop; else nothing."""
        if self.should_training_stop:
            raise TrainingStopped(self.reason)
