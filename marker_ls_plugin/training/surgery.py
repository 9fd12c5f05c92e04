"""The recognition model as training changes it: loading, device and precision, frozen parts, lookahead heads,
activation checkpointing.

- The multi-token lookahead heads get no loss; prediction switches them off (``multi_output_distance = 0`` on the
  loaded model, ``lookahead_off``), so a fine-tuned model never uses stale heads.
- ``FREEZE_GROUPS`` is the one list of parameter groups: TrainingArguments.freeze accepts its names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

# Parameters each name in TrainingArguments.freeze covers (name prefixes). lm_head is tied to the token embeddings.
FREEZE_GROUPS: dict[str, tuple[str, ...]] = {
    "vision_encoder": ("vision_encoder.", "img_w_embed.", "img_h_embed."),
    "decoder": ("decoder.",),
    "embeddings": ("embedder.",),
    "lm_head": ("lm_head.", "embedder.token_embed."),
    "bbox_head": ("bbox_head.",),
    "lookahead_heads": ("multi_output_projections.",),
}
VISION_ENCODER = "vision_encoder"  # frozen, the image embeddings are computed without gradients


def resolve_device(device: str | None = None) -> str:
    import torch  # heavy: torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(mixed_precision: str, device: str) -> str:
    """'bf16', 'fp16' or 'no': auto is bf16 on CUDA devices that support it, else fp16 on CUDA, else no."""
    import torch  # heavy: torch

    if not device.startswith("cuda"):
        return "no"
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return mixed_precision


def load_recognition(checkpoint: str, device: str) -> Any:
    """surya's FoundationPredictor for ``checkpoint`` in float32 (mixed precision is applied by autocast)."""
    import torch  # heavy: torch
    from surya.foundation import FoundationPredictor  # heavy: surya

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


def apply_freeze(model: Any, freeze: Sequence[str]) -> list[Any]:
    """Freeze the parameters of the ``freeze`` groups, train the rest; returns the trainable parameters."""
    prefixes = tuple(prefix for name in freeze for prefix in FREEZE_GROUPS[name])
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(prefixes))
        if parameter.requires_grad:
            trainable.append(parameter)
    if not trainable:
        raise ValueError(f"freeze={list(freeze)} leaves nothing to train")
    return trainable


@contextlib.contextmanager
def checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Activation checkpointing of the decoder layers (surya's decoder loop has none of its own)."""
    if not enabled:
        yield
        return
    import torch  # heavy: torch
    from torch.utils.checkpoint import checkpoint  # heavy: torch

    layers = list(model.decoder.layers)
    for layer in layers:
        forward = layer.forward

        def wrapped(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        layer.forward = wrapped
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
