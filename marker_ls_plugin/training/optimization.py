"""One optimizer step of the fine-tune and its loss (docs/research/surya.md, sections 4 and 5).

- The vision encoder runs outside ``SuryaModel.forward`` (which never calls it): ``get_image_embeddings`` gives the
  flat image-token embeddings, which ``forward`` scatters into the image-token positions in order. Under the
  default freeze it runs without gradients.
- ``cache_position`` is ``arange(L)`` per row, shape (B, L).
- Only the last K positions (the longest target + 1) get logits, via ``logits_to_keep``: the loss is the language
  model cross-entropy of the target tokens.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from marker_ls_plugin.training.config import TrainingArguments
from marker_ls_plugin.training.control import TrainingControl
from marker_ls_plugin.training.surgery import VISION_ENCODER


class Optimization:
    """AdamW with linear warm-up and decay, gradient accumulation and clipping, mixed precision on CUDA.

    Also times the steps: the wait for each batch against the whole step (evaluations excluded).
    """

    def __init__(self, foundation: Any, trainable: list[Any], args: TrainingArguments, precision: str, total: int,
                 device: str):
        import torch  # heavy: torch
        from transformers import get_linear_schedule_with_warmup  # heavy: transformers

        self.foundation, self.trainable, self.args, self.device = foundation, trainable, args, device
        self.optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, math.ceil(total * args.warmup_ratio), total)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                         if precision != "no" else contextlib.nullcontext())
        self.vision_frozen = VISION_ENCODER in args.freeze
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

    def step(self, batches: Iterator[dict[str, Any]], control: TrainingControl) -> float:
        """One optimizer step over ``gradient_accumulation_steps`` batches; returns the step's loss."""
        import torch  # heavy: torch

        model, accumulation = self.foundation.model, self.args.gradient_accumulation_steps
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for _ in range(accumulation):
            control.check()
            waited = time.perf_counter()
            batch = next(batches)
            self.data_seconds += time.perf_counter() - waited
            self.samples += batch["input_ids"].shape[0]
            with self.autocast:
                loss = loss_of(model, self.foundation, batch, self.device, self.vision_frozen) / accumulation
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


def loss_of(model: Any, foundation: Any, batch: dict[str, Any], device: str, vision_frozen: bool) -> Any:
    import torch  # heavy: torch

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
