"""Training arguments: a dataclass with documented defaults and checked bounds, stored on each run as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marker_ls_plugin.training.surgery import FREEZE_GROUPS  # the names freeze accepts

MAX_STEPS = 1_000_000
MAX_BATCH = 1024  # lines per forward pass: far beyond what fits a GPU with surya's recognizer
MAX_SEED = 2**32 - 1  # numpy's seed range


class InvalidTrainingArguments(ValueError):
    """Training arguments that cannot be used; ``errors`` maps each bad argument to its message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Number:
    """A JSON number (``integer``: a whole one; a bool is neither) within [low, high], ends open when asked."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None (JSON null) is allowed

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind}, {self.range()}" + (", or unset" if self.optional else "")

    def range(self) -> str:
        low = "positive" if self.low == 0 and self.low_open else (
            f"greater than {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}")
        high = f"less than {_number(self.high)}" if self.high_open else f"at most {_number(self.high)}"
        return f"{low} and {high}"

    def check(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        kinds = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "an integer" if self.integer else "a number"
            raise ValueError(f"{name} must be {kind}{' or null' if self.optional else ''}, got {value!r}")
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (above and below):  # also NaN
            raise ValueError(f"{name} must be {self.range()}, got {value!r}")
        return value if self.integer else float(value)


@dataclass(frozen=True)
class Flag:
    """A JSON true or false."""

    def describe(self) -> str:
        return "`true` or `false`"

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value


@dataclass(frozen=True)
class Choice:
    """One string of ``choices``."""

    choices: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices)

    def check(self, name: str, value: Any) -> str:
        if value not in self.choices or not isinstance(value, str):
            raise ValueError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


@dataclass(frozen=True)
class Names:
    """A list of non-empty strings, each one of ``choices`` when given; ``optional``: or None, but not empty."""

    choices: tuple[str, ...] = ()
    optional: bool = False
    what: str = "names"

    def describe(self) -> str:
        items = f"{self.what} from " + ", ".join(f"`{c}`" for c in self.choices) if self.choices else self.what
        return f"a non-empty list of {items}, or unset" if self.optional else f"a list of {items}"

    def check(self, name: str, value: Any) -> list[str] | None:
        if value is None and self.optional:
            return None
        if isinstance(value, str) or not isinstance(value, Sequence) or (self.optional and not value):
            wanted = self.describe().replace("`", "").replace(", or unset", " or null")
            raise ValueError(f"{name} must be {wanted}, got {value!r}")
        bad = [item for item in value if not isinstance(item, str) or not item.strip()
               or (self.choices and item not in self.choices)]
        if bad:
            known = f"; known: {', '.join(self.choices)}" if self.choices else ""
            raise ValueError(f"{name} has unknown or empty entries {bad!r}{known}")
        return list(value)


def _argument(default: Any, text: str, rule: Number | Flag | Choice | Names) -> Any:
    metadata = {"help": text, "rule": rule}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainingArguments:
    """How a fine-tune run trains. Every field has a default and a rule; runs store ``to_dict()``."""

    learning_rate: float = _argument(5e-5, "Peak AdamW learning rate.", Number(0, 1, low_open=True))
    num_train_epochs: float = _argument(3.0, "Epochs, unless max_steps is set.", Number(0, 1000, low_open=True))
    max_steps: int | None = _argument(None, "Optimizer steps; overrides epochs.",
                                      Number(1, MAX_STEPS, integer=True, optional=True))
    per_device_train_batch_size: int = _argument(8, "Lines per forward pass.", Number(1, MAX_BATCH, integer=True))
    gradient_accumulation_steps: int = _argument(1, "Forward passes per step.", Number(1, 1024, integer=True))
    warmup_ratio: float = _argument(0.05, "Share of steps with linear warm-up.", Number(0, 1, high_open=True))
    weight_decay: float = _argument(0.01, "AdamW weight decay.", Number(0, 1))
    mixed_precision: str = _argument("auto", "auto (bf16/fp16 on CUDA), bf16, fp16, no.",
                                     Choice(("auto", "bf16", "fp16", "no")))
    gradient_checkpointing: bool = _argument(False, "Trade compute for memory.", Flag())
    eval_steps: int | None = _argument(None, "Evaluate every N steps; None: per epoch.",
                                       Number(1, MAX_STEPS, integer=True, optional=True))
    early_stopping_patience: int | None = _argument(
        3, "Stop after N evaluations without a better validation CER.", Number(1, 1000, integer=True, optional=True))
    val_fraction: float = _argument(0.1, "Share of lines held out for validation.",
                                    Number(0, 1, low_open=True, high_open=True))
    split_seed: int = _argument(0, "Seed of the train/validation split; keep it to validate on the same lines.",
                                Number(0, MAX_SEED, integer=True))
    labels: list[str] | None = _argument(None, "Region labels to train on (e.g. Text, Handwriting); None: all.",
                                         Names(optional=True, what="region labels"))
    max_grad_norm: float = _argument(1.0, "Gradient clipping norm.", Number(0, 1000, low_open=True))
    seed: int = _argument(42, "Seed for shuffling and initialisation.", Number(0, MAX_SEED, integer=True))
    freeze: list[str] = _argument(["vision_encoder"], "Parts kept frozen (lm_head is tied to the token embeddings).",
                                  Names(tuple(FREEZE_GROUPS), what="parameter groups"))
    eval_batch_size: int | None = _argument(None, "Lines per prediction batch when evaluating; None: surya's default.",
                                            Number(1, MAX_BATCH, integer=True, optional=True))
    dataloader_num_workers: int = _argument(0, "Processes preparing batches; 0: in-loop.", Number(0, 64, integer=True))

    def __post_init__(self) -> None:
        """Check every argument against its rule (type first, then range), all at once; normalise numbers."""
        errors = {}
        for spec in dataclasses.fields(self):
            try:
                setattr(self, spec.name, spec.metadata["rule"].check(spec.name, getattr(self, spec.name)))
            except ValueError as exc:
                errors[spec.name] = str(exc)
        if errors:
            raise InvalidTrainingArguments(errors)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainingArguments:
        """Build from stored or user JSON; unknown keys are an error, not silently dropped."""
        if data is not None and not isinstance(data, Mapping):
            raise InvalidTrainingArguments({"config": f"training arguments must be a JSON object, got {data!r}"})
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidTrainingArguments({"unknown": f"unknown training arguments: {', '.join(unknown)}"})
        return cls(**data)

    @classmethod
    def rules(cls) -> dict[str, str]:
        """What each argument accepts, in words (the README's table shows the same)."""
        return {spec.name: spec.metadata["rule"].describe() for spec in dataclasses.fields(cls)}
