"""Executing a fine-tune run on a worker: claim it, run RUN_FUNCTION with a RunContext under a heartbeat, finish it.

A run stops one way: its TrainingControl (training/control.py). The user's cancel is read from the database by the
context (at each progress write, and by the heartbeat thread between them: a long evaluation writes nothing) and
set on the control; the training loop checks the control before every forward pass and evaluation batch, and the
context's ``report``/``check`` (what a run function that does not train calls) raise TrainingStopped once it is
set. RQ's time limit interrupts the run wherever it is (JobTimeoutException); it is recorded as the control's
timeout. The run ends by the control's reason: cancelled, or failed and retryable on a timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rq.timeouts import JobTimeoutException

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.models import FineTuneRun
from marker_ls_plugin.ocr.availability import first_line
from marker_ls_plugin.training.config import TrainingArguments
from marker_ls_plugin.training.control import CANCELLED, TIMEOUT, TrainingControl, TrainingStopped

logger = logging.getLogger(__name__)


def _cancel_requested(run_pk: int) -> bool:
    return FineTuneRun.objects.filter(pk=run_pk, cancel_requested=True).exists()


class RunContext:
    """What a run function sees: its run and arguments, progress and log writes, and the control that stops it.

    ``control`` is what the training loop checks (``loop.train(control=context.control)``); a function that
    does not train stops through ``report`` (or ``check``), which raise TrainingStopped once the run should stop.
    """

    def __init__(self, run: FineTuneRun):
        self.run = run
        self.arguments = TrainingArguments.from_dict(run.config)
        self.control = TrainingControl()
        self._log_lines = run.log_tail.splitlines()

    def should_stop(self) -> bool:
        """True once a cancel was requested (read from the database); the control is told so."""
        if _cancel_requested(self.run.pk):
            self.control.stop(CANCELLED)
            return True
        return False

    def check(self) -> None:
        """Raise TrainingStopped if the run should stop (a cancel read now, or the control set already)."""
        self.should_stop()
        self.control.check()

    def record(
        self,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        epoch: float | None = None,
        metrics: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        """Record progress, and read the user's cancel into the control; raises nothing (the loop checks)."""
        fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
        for name, value in (("step", step), ("total_steps", total_steps), ("epoch", epoch), ("dataset", dataset)):
            if value is not None:
                fields[name] = value
        total = total_steps if total_steps is not None else self.run.total_steps
        if step is not None and total:
            fields["progress"] = min(1.0, step / total)
        if metrics:
            self.run.metrics = [*self.run.metrics, {"step": step, **metrics}]
            fields["metrics"] = self.run.metrics
        FineTuneRun.objects.filter(pk=self.run.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.run, name, value)
        self.should_stop()

    def report(
        self,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        epoch: float | None = None,
        metrics: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        """Record progress (as ``record``); raise TrainingStopped if the run should stop. Call between steps."""
        self.record(step=step, total_steps=total_steps, epoch=epoch, metrics=metrics, dataset=dataset)
        self.control.check()

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Hold off cancels while the run's result is registered (and activated), in one transaction.

        A cancel that came first stops the run here (TrainingStopped, nothing registered); one that comes while
        or after the block runs is refused by runs.cancel_run, so the run ends succeeded with its model.
        """
        with transaction.atomic():
            locked = FineTuneRun.objects.select_for_update().filter(pk=self.run.pk)
            if locked.values_list("cancel_requested", flat=True).first():
                self.control.stop(CANCELLED)
                self.control.check()
            yield

    def log(self, line: str) -> None:
        """Append a line to the run's log tail (the last LOG_TAIL_LINES lines are kept)."""
        keep = get_config()["LOG_TAIL_LINES"]
        self._log_lines = [*self._log_lines, *line.splitlines()][-keep:]
        self.run.log_tail = "\n".join(self._log_lines)
        FineTuneRun.objects.filter(pk=self.run.pk).update(log_tail=self.run.log_tail)


class _Heartbeat(threading.Thread):
    """Writes the run's heartbeat while its function executes, even inside a long step; reads the user's cancel
    into the control between the function's own reports (a long evaluation reports nothing)."""

    def __init__(self, run_pk: int, interval: float, control: TrainingControl):
        super().__init__(daemon=True, name=f"marker-ls-heartbeat-{run_pk}")
        self.run_pk, self.interval, self.control = run_pk, interval, control
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                FineTuneRun.objects.filter(pk=self.run_pk, status=FineTuneRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
                if _cancel_requested(self.run_pk):
                    self.control.stop(CANCELLED)
        except Exception:
            logger.exception("heartbeat for run %s stopped", self.run_pk)
        finally:
            connection.close()


def claim(run_pk: int) -> FineTuneRun | None:
    """Move queued run ``run_pk`` to running on this worker; None when it is not queued (cancelled, or done)."""
    now = timezone.now()
    claimed = FineTuneRun.objects.filter(pk=run_pk, status=FineTuneRun.Status.QUEUED).update(
        status=FineTuneRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    return FineTuneRun.objects.get(pk=run_pk) if claimed else None


def execute_run(run_pk: int) -> str:
    """Execute fine-tune run ``run_pk`` on this worker; return its final status."""
    run = claim(run_pk)
    if run is None:
        status = FineTuneRun.objects.filter(pk=run_pk).values_list("status", flat=True).get()
        logger.info("run %s is %s; nothing to do", run_pk, status)
        return status
    context = RunContext(run)
    heartbeat = _Heartbeat(run_pk, get_config()["HEARTBEAT_INTERVAL"], context.control)
    heartbeat.start()
    try:
        import_string(get_config()["RUN_FUNCTION"])(context)
    except TrainingStopped as exc:
        _stopped(run, exc.reason, exc)
    except JobTimeoutException as exc:  # RQ's time limit, raised wherever the run was: the control's timeout
        context.control.stop(TIMEOUT)
        _stopped(run, TIMEOUT, exc)
    except Exception as exc:
        logger.exception("run %s failed", run_pk)
        finish(run, FineTuneRun.Status.FAILED, error=error_line(exc), traceback=traceback.format_exc())
    else:
        status = FineTuneRun.Status.CANCELLED if context.should_stop() else FineTuneRun.Status.SUCCEEDED
        finish(run, status)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    return run.status


def _stopped(run: FineTuneRun, reason: str, exc: BaseException) -> None:
    """End a run its control stopped: cancelled, or failed on a timeout (retryable: the queue's limit, not the
    run's fault; a retry, maybe with a longer RUN_TIMEOUT, may pass)."""
    if reason == CANCELLED:
        finish(run, FineTuneRun.Status.CANCELLED)
        return
    logger.exception("run %s failed: %s", run.pk, reason)
    finish(run, FineTuneRun.Status.FAILED, error=error_line(exc), traceback=traceback.format_exc(), retryable=True)


def finish(run: FineTuneRun, status: str, *, error: str = "", traceback: str = "", retryable: bool = False,
           from_statuses: tuple[str, ...] = FineTuneRun.ACTIVE_STATUSES) -> bool:
    """Move a run in one of ``from_statuses`` (default: any active one) to a final status; False when it was not.

    ``error`` is one line; ``retryable`` marks a failure from outside the run, which a retry may not meet.
    """
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "retryable": retryable}
    if error:
        fields["error"] = error
    if traceback:
        fields["traceback"] = traceback
    if status == FineTuneRun.Status.SUCCEEDED:
        fields["progress"] = 1.0
    done = FineTuneRun.objects.filter(pk=run.pk, status__in=from_statuses).update(**fields)
    run.refresh_from_db()
    return bool(done)


def error_line(exc: BaseException) -> str:
    """``"<ExceptionType>: <first line of its message>"``: what a run page shows first; the traceback follows."""
    message = first_line(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
