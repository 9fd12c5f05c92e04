"""Fine-tuning surya-ocr 0.17.1 recognition on line crops. Knows nothing of Django: it reports through Callbacks.

What one training example is, and why (docs/research/surya.md, sections 4 and 5):

- The prompt is exactly the one prediction builds (``SuryaEngine``: task ``ocr_without_boxes``, ``math_mode=False``):
  image tokens and register tokens, then ``<OCR-WOB> <NO-MATH> <EOI>``. The target follows: surya's script tokens
  for the text (as surya's own recipe does), the text, ``</S>``. Everything up to ``<EOI>`` is masked from the loss;
  the target carries no ``<NO-MATH>`` (it is passed with ``math=True``, which only controls that token).
- The vision encoder runs outside ``SuryaModel.forward`` (which never calls it): ``get_image_embeddings`` gives the
  flat image-token embeddings, which ``forward`` scatters into the image-token positions in order. Under the
  default freeze it runs without gradients.
- Rows are left-padded as at prediction; ``position_ids`` come from the processor; ``cache_position`` is
  ``arange(L)`` per row, shape (B, L).
- Only the last K positions (the longest target + 1) get logits, via ``logits_to_keep``: the loss is the language
  model cross-entropy of the target tokens. The multi-token lookahead heads get no loss; prediction switches them
  off (``multi_output_distance = 0`` on the loaded model), so a fine-tuned model never uses stale heads.
- The image goes through surya's own path: RGB float32 array, ``scale_to_fit`` to the task's size, tiling.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marker_ls_plugin.training.config import FREEZE_GROUPS, TrainingArguments
from marker_ls_plugin.training.metrics import LinePair, score, worst_lines

TASK = "ocr_without_boxes"
IGNORE = -100
METADATA_FILE = "marker_ls_model.json"


@dataclass(frozen=True)
class Line:
    """One line crop and its transcription."""

    image: Any  # a path or a PIL image
    text: str
    label: str = ""
    key: str = ""  # stable id, e.g. "task:region"


class TrainingStopped(Exception):
    """Raised when Callbacks.should_stop() turned true; nothing is saved."""


class Callbacks:
    """How the loop reports. Subclass and override; the defaults do nothing."""

    def on_step(self, step: int, total_steps: int, epoch: float, loss: float, learning_rate: float) -> None:
        """After each optimizer step."""

    def on_evaluate(self, step: int, metrics: dict[str, Any]) -> None:
        """After each evaluation on the validation lines (step 0 is the model before training)."""

    def log(self, message: str) -> None:
        """A line for the run's log."""

    def should_stop(self) -> bool:
        """Checked before every forward pass and evaluation batch; True stops with TrainingStopped."""
        return False


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    pairs: list[LinePair]


@dataclass
class TrainResult:
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


def resolve_device(device: str | None = None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(mixed_precision: str, device: str) -> str:
    """'bf16', 'fp16' or 'no': auto is bf16 on CUDA devices that support it, else fp16 on CUDA, else no."""
    import torch

    if not device.startswith("cuda"):
        return "no"
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return mixed_precision


def load_recognition(checkpoint: str, device: str) -> Any:
    """surya's FoundationPredictor for ``checkpoint`` in float32 (mixed precision is applied by autocast)."""
    import torch
    from surya.foundation import FoundationPredictor

    return FoundationPredictor(checkpoint=checkpoint, device=device, dtype=torch.float32)


@contextlib.contextmanager
def lookahead_off(model: Any) -> Iterator[None]:
    """Prediction without the multi-token lookahead heads (what SuryaEngine does), restored afterwards."""
    distance = model.config.multi_output_distance
    model.config.multi_output_distance = 0
    try:
        yield
    finally:
        model.config.multi_output_distance = distance


def evaluate(foundation: Any, lines: Sequence[Line], device: str, callbacks: Callbacks | None = None,
             batch_size: int | None = None) -> Evaluation:
    """Read ``lines`` with the prediction code pre-annotation uses and score them against their text."""
    from marker_ls_plugin.ocr.engines import SuryaEngine

    callbacks = callbacks or Callbacks()
    engine = SuryaEngine.around(foundation, device, batch_size=batch_size)
    chunk = max(1, batch_size or 64)
    pairs: list[LinePair] = []
    was_training = foundation.model.training
    foundation.model.eval()
    try:
        with lookahead_off(foundation.model):
            for start in range(0, len(lines), chunk):
                if callbacks.should_stop():
                    raise TrainingStopped()
                batch = lines[start:start + chunk]
                read = engine.read_lines([_open(line.image) for line in batch])
                pairs += [LinePair(line.text, got.text, line.label, line.key)
                          for line, got in zip(batch, read, strict=True)]
    finally:
        foundation.model.train(was_training)
    return Evaluation(score(pairs), pairs)


def train(checkpoint: str, train_lines: Sequence[Line], val_lines: Sequence[Line], args: TrainingArguments,
          output_dir: str | os.PathLike | None = None, callbacks: Callbacks | None = None,
          device: str | None = None) -> TrainResult:
    """Fine-tune ``checkpoint`` on ``train_lines``; evaluate before, during and after on ``val_lines``.

    The weights with the best validation CER are kept. With ``output_dir``, the model is saved there atomically
    (written to a hidden sibling directory, then renamed) with its tokenizer and a metadata file.
    """

    callbacks = callbacks or Callbacks()
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
    examples, skipped = _examples(processor, train_lines, max_tokens)
    if not examples:
        raise ValueError(f"no usable training lines ({_describe(skipped) or 'none given'})")
    if skipped:
        callbacks.log(f"left out of training: {_describe(skipped)}")
    trainable = _apply_freeze(model, args.freeze)
    callbacks.log(f"{len(examples)} training lines, {len(val_lines)} validation lines, "
                  f"{sum(p.numel() for p in trainable):,} trainable parameters")

    before = evaluate(foundation, val_lines, device, callbacks, args.eval_batch_size)
    callbacks.log(f"before: CER {before.metrics['cer']}, WER {before.metrics['wer']}, exact {before.metrics['exact']}")
    callbacks.on_evaluate(0, {"phase": "before", **_flat(before.metrics)})

    per_epoch = math.ceil(len(examples) / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
    total = args.max_steps or max(1, math.ceil(per_epoch * args.num_train_epochs))
    eval_every = args.eval_steps or per_epoch
    optimization = _Optimization(foundation, trainable, args, precision, total, device)
    best = _BestWeights(args.early_stopping_patience)
    history: list[dict[str, Any]] = []
    step, stopped_early = 0, False
    model.train()
    with _checkpointing(model, args.gradient_checkpointing):
        batches = _cycle(_loader(examples, processor, args))
        while step < total and not stopped_early:
            loss = optimization.step(batches, callbacks)
            step += 1
            history.append({"step": step, "loss": round(loss, 5)})
            callbacks.on_step(step, total, step / per_epoch, loss, optimization.learning_rate)
            if step % eval_every == 0 or step == total:
                current = evaluate(foundation, val_lines, device, callbacks, args.eval_batch_size)
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
    result = TrainResult(before=before, after=after, steps=step, best_step=best.step, stopped_early=stopped_early,
                         skipped=skipped, device=device, precision=precision,
                         seconds=round(time.monotonic() - started, 2),
                         worst=worst_lines(before.pairs, after.pairs), history=history, foundation=foundation,
                         samples_per_second=optimization.samples_per_second,
                         data_wait_share=optimization.data_wait_share)
    if output_dir is not None:
        save(foundation, output_dir, {"base": checkpoint, "arguments": args.to_dict(), "steps": step,
                                      "best_step": best.step, "before": before.metrics, "after": after.metrics})
    return result


class _Optimization:
    """AdamW with linear warm-up and decay, gradient accumulation and clipping, mixed precision on CUDA.

    Also times the steps: the wait for each batch against the whole step (evaluations excluded).
    """

    def __init__(self, foundation: Any, trainable: list[Any], args: TrainingArguments, precision: str, total: int,
                 device: str):
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.foundation, self.trainable, self.args, self.device = foundation, trainable, args, device
        self.optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, math.ceil(total * args.warmup_ratio), total)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                         if precision != "no" else contextlib.nullcontext())
        self.vision_frozen = "vision_encoder" in args.freeze
        self.samples, self.data_seconds, self.step_seconds = 0, 0.0, 0.0

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @property
    def samples_per_second(self) -> float:
        return round(self.samples / self.step_seconds, 2) if self.step_seconds else 0.0

    @property
    def data_wait_share(self) -> float:
        return round(self.data_seconds / self.step_seconds, 4) if self.step_seconds else 0.0

    def step(self, batches: Iterator[dict[str, Any]], callbacks: Callbacks) -> float:
        """One optimizer step over ``gradient_accumulation_steps`` batches; returns the step's loss."""
        import torch

        model, accumulation = self.foundation.model, self.args.gradient_accumulation_steps
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for _ in range(accumulation):
            if callbacks.should_stop():
                raise TrainingStopped()
            waited = time.perf_counter()
            batch = next(batches)
            self.data_seconds += time.perf_counter() - waited
            self.samples += batch["input_ids"].shape[0]
            with self.autocast:
                loss = _loss(model, self.foundation, batch, self.device, self.vision_frozen) / accumulation
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total_loss += float(loss.detach())
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trainable, self.args.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.step_seconds += time.perf_counter() - started
        return total_loss


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


def save(foundation: Any, output_dir: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Save model, tokenizer and ``marker_ls_model.json`` to ``output_dir`` atomically; returns the directory.

    Files go to a hidden sibling first and are renamed into place, so ``output_dir`` is either absent or complete.
    The config is saved with the checkpoint's own multi_output_distance (heads kept, unchanged).
    """
    final = Path(output_dir)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        foundation.model.save_pretrained(str(tmp))
        foundation.processor.ocr_tokenizer.ocr_tokenizer.save_pretrained(str(tmp))
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --- internals ------------------------------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _open(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")


def _target(text: str) -> str:
    from surya.common.util import SCRIPT_TOKEN_MAPPING, get_top_scripts

    return "".join(SCRIPT_TOKEN_MAPPING[script] for script in get_top_scripts(text)) + text


def _examples(processor: Any, lines: Sequence[Line], max_tokens: int) -> tuple[list[Line], dict[str, int]]:
    """Lines that fit: non-empty text, at most ``max_tokens`` target tokens (prediction stops there)."""
    kept, skipped = [], {}
    for line in lines:
        text = line.text.strip()
        if not text:
            skipped["empty text"] = skipped.get("empty text", 0) + 1
            continue
        tokens = len(processor.ocr_tokenizer(_target(text), tasks=TASK)["input_ids"][0]) + 1  # + </S>
        if tokens > max_tokens:
            reason = f"longer than {max_tokens} tokens"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        kept.append(Line(line.image, text, line.label, line.key))
    return kept, skipped


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in ("cer", "wer", "exact", "lines")}


def _apply_freeze(model: Any, freeze: Sequence[str]) -> list[Any]:
    prefixes = tuple(prefix for name in freeze for prefix in FREEZE_GROUPS[name])
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(prefixes))
        if parameter.requires_grad:
            trainable.append(parameter)
    if not trainable:
        raise ValueError(f"freeze={list(freeze)} leaves nothing to train")
    return trainable


class _LineDataset:
    """Line crops as surya's recognizer sees them: RGB float32 arrays scaled to fit the task's image size."""

    def __init__(self, lines: Sequence[Line], image_size: tuple[int, int]):
        self.lines, self.image_size = list(lines), image_size

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> tuple[Any, str]:
        import numpy as np
        from surya.common.surya.processor import SuryaOCRProcessor

        line = self.lines[index]
        array = np.asarray(_open(line.image), dtype=np.float32)
        return SuryaOCRProcessor.scale_to_fit(array, self.image_size), _target(line.text)


class _Collate:
    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, items: list[tuple[Any, str]]) -> dict[str, Any]:
        import torch

        batch = self.processor([
            {"task": TASK, "inputs": [{"type": "image", "image": image, "rotated": False},
                                      {"type": "text", "text": "", "math": False},
                                      {"type": "text", "text": target, "math": True}]}
            for image, target in items
        ], padding_side="left")
        input_ids = batch["input_ids"].to(torch.long)
        # Everything up to and including <EOI> is prompt; pads are left of it.
        eoi = (input_ids == self.processor.eoi_token_id).to(torch.long).argmax(dim=1)
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        labels = input_ids.masked_fill(positions <= eoi.unsqueeze(1), IGNORE)
        keep = int((input_ids.shape[1] - eoi).max())  # longest target + its <EOI> position
        return {"input_ids": input_ids, "attention_mask": batch["attention_mask"].to(torch.long),
                "position_ids": batch["position_ids"].to(torch.long), "image_tiles": batch["image_tiles"],
                "grid_thw": batch["grid_thw"].to(torch.long), "labels": labels, "keep": keep}


def _loader(examples: Sequence[Line], processor: Any, args: TrainingArguments) -> Any:
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    return torch.utils.data.DataLoader(
        _LineDataset(examples, (1024, 512)), batch_size=args.per_device_train_batch_size, shuffle=True,
        collate_fn=_Collate(processor), num_workers=args.dataloader_num_workers, generator=generator,
        persistent_workers=args.dataloader_num_workers > 0, drop_last=False,
    )


def _cycle(loader: Any) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def _loss(model: Any, foundation: Any, batch: dict[str, Any], device: str, vision_frozen: bool) -> Any:
    import torch

    input_ids = batch["input_ids"].to(device)
    rows, length = input_ids.shape
    grad = contextlib.nullcontext() if not vision_frozen else torch.no_grad()
    with grad:
        embeddings = model.get_image_embeddings(
            pixel_values=batch["image_tiles"].to(device, dtype=model.dtype), grid_thw=batch["grid_thw"].to(device),
            encoder_chunk_size=foundation.get_encoder_chunk_size(),
        )
    keep = batch["keep"]
    output = model(
        input_ids=input_ids,
        image_embeddings=embeddings,
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        cache_position=torch.arange(length, device=device).unsqueeze(0).expand(rows, length),
        labels=batch["labels"][:, -keep:].to(device),
        logits_to_keep=keep,
        prefill=True,
        use_cache=False,
    )
    return output.loss


@contextlib.contextmanager
def _checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Activation checkpointing of the decoder layers (surya's decoder loop has none of its own)."""
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    layers = list(model.decoder.layers)
    for layer in layers:
        forward = layer.forward

        def wrapped(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            import torch

            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        layer.forward = wrapped
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
