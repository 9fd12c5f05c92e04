"""Rendered single text lines (line crops) for training and evaluation tests."""

from __future__ import annotations

from mls_render import load_font
from PIL import Image, ImageDraw

# Eight short lines; the training tests render each in six sizes and offsets.
TEXTS = ["alpha 12", "bravo 34", "charlie 5", "delta 678", "echo 9", "foxtrot 0", "golf 21", "hotel 43"]
TRAIN_RENDERINGS = ((22, 2, 2), (24, 8, 3), (26, 6, 1), (28, 1, 5), (30, 3, 4), (32, 5, 2))
VAL_RENDERING = (27, 4, 3)


def render_line(text: str, font_size: int = 28, dx: int = 4, dy: int = 3) -> Image.Image:
    """Black text on a white crop just larger than the text, offset by (dx, dy)."""
    font = load_font(font_size)
    width = int(font.getlength(text)) + 2 * dx + 10
    height = int(font_size * 1.5) + 2 * dy
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((dx + 5, dy + 2), text, fill="black", font=font)
    return image
