"""Plain data passed between engines, the predictor and the result builders (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

Point = tuple[float, float]


@dataclass
class OCRLine:
    """One text line in pixel coordinates of the upright (EXIF-applied) image.

    ``polygon`` has 4 points, clockwise from the top-left corner of the text as read.
    """

    polygon: list[Point]
    text: str
    confidence: float


@dataclass
class PageOCR:
    """What an engine found on one image."""

    width: int
    height: int
    lines: list[OCRLine] = field(default_factory=list)


class EngineUnavailable(RuntimeError):
    """The engine cannot load (missing package or weights); the message says what to set."""


class ImageError(ValueError):
    """An image cannot be used: missing, corrupt, not an image, or too large. The message says which."""
