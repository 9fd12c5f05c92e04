"""Training arguments: a dataclass with documented defaults, stored on each run as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainingArguments:
    """How a fine-tune run trains. Every field has a default; runs store ``to_dict()``."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs, unless max_steps is set."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Lines per forward pass."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes per step."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps with linear warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16/fp16 on CUDA), bf16, fp16, no."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N steps; None: per epoch."})
    early_stopping_patience: int | None = field(
        default=3, metadata={"help": "Stop after N evaluations without a better validation CER."}
    )
    val_fraction: float = field(default=0.1, metadata={"help": "Share of lines held out for validation."})
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the train/validation split; keep it to validate on the same lines."}
    )
    labels: list[str] | None = field(
        default=None, metadata={"help": "Region labels to train on (e.g. Text, Handwriting); None: all."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    seed: int = field(default=42, metadata={"help": "Seed for shuffling and initialisation."})
    freeze: list[str] = field(
        default_factory=lambda: ["vision_encoder"],
        metadata={"help": "Parts kept frozen: vision_encoder, decoder, embeddings, lm_head (tied to the token "
                          "embeddings), bbox_head, lookahead_heads."},
    )
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Lines per prediction batch when evaluating; None: surya's default."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Processes preparing batches; 0: in-loop."})

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch size and gradient accumulation must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1 (or None)")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError("mixed_precision must be one of auto, bf16, fp16, no")
        if self.num_train_epochs <= 0 or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise ValueError("num_train_epochs must be positive, warmup_ratio in [0, 1), weight_decay >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be between 0 and 1 (exclusive)")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError("eval_steps must be at least 1 (or None)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be at least 1 (or None)")
        if self.dataloader_num_workers < 0 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise ValueError("dataloader_num_workers must be >= 0 and eval_batch_size >= 1")
        groups = ("vision_encoder", "decoder", "embeddings", "lm_head", "bbox_head", "lookahead_heads")
        unknown = [name for name in self.freeze if name not in groups]
        if unknown:
            raise ValueError(f"unknown freeze groups {unknown}; known: {', '.join(groups)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainingArguments:
        """Build from stored or user JSON; unknown keys are an error, not silently dropped."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training arguments: {', '.join(unknown)}")
        return cls(**data)
