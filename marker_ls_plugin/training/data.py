"""Training data: line crops, which of them fit, and batches as surya's recognizer sees them.

What one training example is, and why (docs/research/surya.md, sections 4 and 5):

- The prompt is exactly the one prediction builds (task ``ocr_without_boxes``, ``math_mode=False``): image tokens
  and register tokens, then ``<OCR-WOB> <NO-MATH> <EOI>``. The target follows: surya's script tokens for the
  text (as surya's own recipe does), the text, ``</S>``. Everything up to ``<EOI>`` is masked from the loss;
  the target carries no ``<NO-MATH>`` (it is passed with ``math=True``, which only controls that token).
- Rows are left-padded as at prediction; ``position_ids`` come from the processor.
- The image goes through surya's own path: RGB float32 array, ``scale_to_fit`` to the task's size, tiling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

TASK = "ocr_without_boxes"
IGNORE = -100
IMAGE_SIZE = (1024, 512)  # the task's image size in surya 0.17.1


@dataclass(frozen=True)
class Line:
    """One line crop and its transcription."""

    image: Any  # a path or a PIL image
    text: str
    label: str = ""
    key: str = ""  # stable id, e.g. "task:region"


def open_image(image: Any) -> Any:
    """A path or a PIL image, as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")


def target(text: str) -> str:
    """surya's script tokens for ``text``, then the text."""
    from surya.common.util import SCRIPT_TOKEN_MAPPING, get_top_scripts  # heavy: surya

    return "".join(SCRIPT_TOKEN_MAPPING[script] for script in get_top_scripts(text)) + text


def examples(processor: Any, lines: Sequence[Line], max_tokens: int) -> tuple[list[Line], dict[str, int]]:
    """Lines that fit: non-empty text, at most ``max_tokens`` target tokens (prediction stops there)."""
    kept, skipped = [], {}
    for line in lines:
        text = line.text.strip()
        if not text:
            skipped["empty text"] = skipped.get("empty text", 0) + 1
            continue
        tokens = len(processor.ocr_tokenizer(target(text), tasks=TASK)["input_ids"][0]) + 1  # + </S>
        if tokens > max_tokens:
            reason = f"longer than {max_tokens} tokens"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        kept.append(Line(line.image, text, line.label, line.key))
    return kept, skipped


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


class LineDataset:
    """Line crops as surya's recognizer sees them: RGB float32 arrays scaled to fit the task's image size."""

    def __init__(self, lines: Sequence[Line], image_size: tuple[int, int]):
        self.lines, self.image_size = list(lines), image_size

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> tuple[Any, str]:
        from surya.common.surya.processor import SuryaOCRProcessor  # heavy: surya

        line = self.lines[index]
        array = np.asarray(open_image(line.image), dtype=np.float32)
        return SuryaOCRProcessor.scale_to_fit(array, self.image_size), target(line.text)


class Collate:
    """Items to one left-padded batch, labels masked up to and including ``<EOI>``."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, items: list[tuple[Any, str]]) -> dict[str, Any]:
        import torch  # heavy: torch

        batch = self.processor([
            {"task": TASK, "inputs": [{"type": "image", "image": image, "rotated": False},
                                      {"type": "text", "text": "", "math": False},
                                      {"type": "text", "text": text, "math": True}]}
            for image, text in items
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


def loader(lines: Sequence[Line], processor: Any, batch_size: int, workers: int, seed: int) -> Any:
    """A shuffling torch DataLoader of ``lines`` (``workers`` processes; 0: batches made in the loop)."""
    import torch  # heavy: torch

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        LineDataset(lines, IMAGE_SIZE), batch_size=batch_size, shuffle=True, collate_fn=Collate(processor),
        num_workers=workers, generator=generator, persistent_workers=workers > 0, drop_last=False,
    )


def cycle(batches: Any) -> Iterator[dict[str, Any]]:
    """``batches`` over and over (one epoch after another)."""
    while True:
        yield from batches
