"""Fine-tuning surya-ocr 0.17.1 recognition on line crops: train, evaluate, keep the best weights.

Knows nothing of Django: it reports through Callbacks and stops when its TrainingControl says so (control.py).
The data it trains on is data.py's; what it does to the model (freezing, checkpointing, lookahead heads) is
surgery.py's; one optimizer step and its loss are optimization.py's; where the result goes is model_dir.py's.

Evaluation reads the validation lines with the prediction code pre-annotation uses: the caller passes it as
``reader`` (``SuryaEngine.around``), so the registry's numbers are what the model predicts in production.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marker_ls_plugin.training import data
from marker_ls_plugin.training.config import TrainingArguments
from marker_ls_plugin.training.control import TrainingControl
from marker_ls_plugin.training.data import TASK, Line
from marker_ls_plugin.training.metrics import LinePair, score, worst_lines
from marker_ls_plugin.training.model_dir import ModelMetadata, save
from marker_ls_plugin.training.optimization import Optimization
from marker_ls_plugin.training.surgery import (
    apply_freeze,
    checkpointing,
    load_recognition,
    lookahead_off,
    resolve_device,
    resolve_precision,
)

# reader(foundation, device, batch_size) -> an object whose read_lines(images) gives one result with .text per image
Reader = Callable[[Any, str, "int | None"], Any]


class Callbacks:
    """How the loop reports. Subclass and override; the defaults do nothing. Stopping is the control's."""

    def on_step(self, step: int, total_steps: int, epoch: float, loss: float, learning_rate: float) -> None:
        """After each optimizer step."""

    def on_evaluate(self, step: int, metrics: dict[str, Any]) -> None:
        """After each evaluation on the validation lines (step 0 is the model before training)."""

    def log(self, message: str) -> None:
        """A line for the run's log."""


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    pairs: list[LinePair]


@dataclass
class TrainResult:
    base: str  # the checkpoint training started from
    before: Evaluation
    after: Evaluation
    steps: int
    best_step: int
    stopped_early: bool
    skipped: dict[str, int]
    device: str
    precision: str
    seconds: float
    worst: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # Throughput of the training steps (evaluation excluded): lines per second, and the share of step time
    # spent waiting for the next batch (image decoding, resizing, tiling, tokenising).
    samples_per_second: float = 0.0
    data_wait_share: float = 0.0
    foundation: Any = field(default=None, repr=False)  # the trained FoundationPredictor, for save()

    def metrics(self) -> dict[str, Any]:
        """What a model directory's metadata (and so the registry) records of this training."""
        return {
            "base_checkpoint": self.base, "before": self.before.metrics, "after": self.after.metrics,
            "steps": self.steps, "best_step": self.best_step, "stopped_early": self.stopped_early,
            "device": self.device, "precision": self.precision, "seconds": self.seconds,
            "skipped": self.skipped, "worst_lines": self.worst,
            "samples_per_second": self.samples_per_second, "data_wait_share": self.data_wait_share,
        }


def evaluate(foundation: Any, lines: Sequence[Line], device: str, reader: Reader,
             control: TrainingControl | None = None, batch_size: int | None = None) -> Evaluation:
    """Read ``lines`` with ``reader`` (the prediction code pre-annotation uses) and score them against their text."""
    control = control or TrainingControl()
    engine = reader(foundation, device, batch_size)
    chunk = max(1, batch_size or 64)
    pairs: list[LinePair] = []
    was_training = foundation.model.training
    foundation.model.eval()
    try:
        with lookahead_off(foundation.model):
            for start in range(0, len(lines), chunk):
                control.check()
                batch = lines[start:start + chunk]
                read = engine.read_lines([data.open_image(line.image) for line in batch])
                pairs += [LinePair(line.text, got.text, line.label, line.key)
                          for line, got in zip(batch, read, strict=True)]
    finally:
        foundation.model.train(was_training)
    return Evaluation(score(pairs), pairs)


def train(checkpoint: str, train_lines: Sequence[Line], val_lines: Sequence[Line], args: TrainingArguments,
          output_dir: str | os.PathLike | None = None, callbacks: Callbacks | None = None,
          device: str | None = None, *, reader: Reader, control: TrainingControl | None = None) -> TrainResult:
    """Fine-tune ``checkpoint`` on ``train_lines``; evaluate before, during and after on ``val_lines``.

    The weights with the best validation CER are kept. ``control`` is checked before every forward pass and
    evaluation batch: once it says stop, TrainingStopped is raised and nothing is saved. With ``output_dir``, the
    model is saved there atomically with its metadata (model_dir.save).
    """

    callbacks = callbacks or Callbacks()
    control = control or TrainingControl()
    if not val_lines:
        raise ValueError("no validation lines: fine-tuning needs some to measure the model (annotate more lines "
                         "or raise the validation fraction)")
    started = time.monotonic()
    device = resolve_device(device)
    precision = resolve_precision(args.mixed_precision, device)
    _seed(args.seed)
    callbacks.log(f"loading {checkpoint} on {device} (mixed precision: {precision})")
    foundation = load_recognition(checkpoint, device)
    model, processor = foundation.model, foundation.processor
    max_tokens = foundation.tasks[TASK]["max_tokens"]
    examples, skipped = data.examples(processor, train_lines, max_tokens)
    if not examples:
        raise ValueError(f"no usable training lines ({data.describe(skipped) or 'none given'})")
    if skipped:
        callbacks.log(f"left out of training: {data.describe(skipped)}")
    trainable = apply_freeze(model, args.freeze)
    callbacks.log(f"{len(examples)} training lines, {len(val_lines)} validation lines, "
                  f"{sum(p.numel() for p in trainable):,} trainable parameters")

    def validate() -> Evaluation:
        return evaluate(foundation, val_lines, device, reader, control, args.eval_batch_size)

    before = validate()
    callbacks.log(f"before: CER {before.metrics['cer']}, WER {before.metrics['wer']}, exact {before.metrics['exact']}")
    callbacks.on_evaluate(0, {"phase": "before", **_flat(before.metrics)})

    per_epoch = math.ceil(len(examples) / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
    total = args.max_steps or max(1, math.ceil(per_epoch * args.num_train_epochs))
    eval_every = args.eval_steps or per_epoch
    optimization = Optimization(foundation, trainable, args, precision, total, device)
    best = _BestWeights(args.early_stopping_patience)
    history: list[dict[str, Any]] = []
    step, stopped_early = 0, False
    model.train()
    with checkpointing(model, args.gradient_checkpointing):
        batches = data.cycle(data.loader(examples, processor, args.per_device_train_batch_size,
                                         args.dataloader_num_workers, args.seed))
        while step < total and not stopped_early:
            loss = optimization.step(batches, control)
            step += 1
            history.append({"step": step, "loss": round(loss, 5)})
            callbacks.on_step(step, total, step / per_epoch, loss, optimization.learning_rate)
            if step % eval_every == 0 or step == total:
                current = validate()
                callbacks.on_evaluate(step, {"phase": "train", "loss": round(loss, 5), **_flat(current.metrics)})
                callbacks.log(f"step {step}/{total}: loss {loss:.4f}, validation CER {current.metrics['cer']}")
                stopped_early = best.offer(step, current, model)
                if stopped_early:
                    callbacks.log(f"early stop: no better validation CER in {best.stale} evaluations")
    best.restore(model, step)
    after = best.evaluation
    if after.metrics["cer"] >= before.metrics["cer"]:
        callbacks.log(f"the fine-tuned model does not beat the starting one on validation CER "
                      f"({after.metrics['cer']} vs {before.metrics['cer']})")
    result = TrainResult(base=checkpoint, before=before, after=after, steps=step, best_step=best.step,
                         stopped_early=stopped_early, skipped=skipped, device=device, precision=precision,
                         seconds=round(time.monotonic() - started, 2),
                         worst=worst_lines(before.pairs, after.pairs), history=history, foundation=foundation,
                         samples_per_second=optimization.samples_per_second,
                         data_wait_share=optimization.data_wait_share)
    if output_dir is not None:
        save(foundation, output_dir, ModelMetadata(metrics=result.metrics(), base=checkpoint,
                                                   arguments=args.to_dict()))
    return result


class _BestWeights:
    """The weights of the best trained evaluation (lowest validation CER), and when to stop early.

    The first trained evaluation always counts, so the weights kept are trained ones; whether they beat the
    starting model is the caller's decision.
    """

    def __init__(self, patience: int | None):
        self.patience = patience
        self.evaluation: Evaluation | None = None
        self.step, self.stale = 0, 0
        self._state: dict[str, Any] | None = None

    def offer(self, step: int, evaluation: Evaluation, model: Any) -> bool:
        """Keep ``model``'s weights if ``evaluation`` is the best yet; True when training should stop."""
        if self.evaluation is None or evaluation.metrics["cer"] < self.evaluation.metrics["cer"]:
            self.evaluation, self.step, self.stale = evaluation, step, 0
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, model: Any, current_step: int) -> None:
        if self._state is not None and self.step != current_step:
            model.load_state_dict(self._state)


# --- internals ------------------------------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    import torch  # heavy: torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in ("cer", "wer", "exact", "lines")}
