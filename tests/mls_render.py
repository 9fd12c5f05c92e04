"""Render printed text pages with Pillow, with the ground-truth polygon of every line."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
DEFAULT_FONT = FONTS / "DejaVuSans.ttf"

Point = tuple[float, float]


def load_font(font_size: int, font_path: str | Path = DEFAULT_FONT) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path), font_size)


def render_page(
    lines: list[str],
    size: tuple[int, int] = (1000, 400),
    font_size: int = 30,
    rotate_deg: float = 0,
    *,
    font_path: str | Path = DEFAULT_FONT,
    margin: int = 40,
    line_spacing: float = 1.9,
    pad: int = 6,
) -> tuple[Image.Image, list[list[Point]]]:
    """Black text on white; returns the RGB page and one 4-point polygon per line.

    Each polygon is the line's ink box grown by ``pad`` pixels, clockwise from the top-left corner of the text
    as read. ``rotate_deg`` turns the page counter-clockwise about its centre (Pillow's sense), polygons with it.
    """
    width, height = size
    font = load_font(font_size, font_path)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for i, text in enumerate(lines):
        origin = (margin, margin + round(i * font_size * line_spacing))
        x0, y0, x1, y1 = draw.textbbox(origin, text, font=font)
        if x1 + pad > width or y1 + pad > height:
            raise ValueError(f"line {i} ({text!r}) does not fit on a {width}x{height} page")
        draw.text(origin, text, fill="black", font=font)
        boxes.append((x0 - pad, y0 - pad, x1 + pad, y1 + pad))
    polygons = [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, y0, x1, y1 in boxes]
    if rotate_deg:
        image = image.rotate(rotate_deg, resample=Image.Resampling.BICUBIC, fillcolor="white")
        polygons = [[_rotate_point(p, rotate_deg, width / 2, height / 2) for p in poly] for poly in polygons]
    return image, [[(float(x), float(y)) for x, y in poly] for poly in polygons]


def _rotate_point(point: Point, degrees: float, cx: float, cy: float) -> Point:
    # Pillow turns the picture counter-clockwise on screen; with y pointing down that is this matrix.
    theta = math.radians(degrees)
    dx, dy = point[0] - cx, point[1] - cy
    return (cx + dx * math.cos(theta) + dy * math.sin(theta), cy - dx * math.sin(theta) + dy * math.cos(theta))


def bbox(polygon: list[Point]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def iou(a: list[Point], b: list[Point]) -> float:
    """Intersection over union of the two polygons' axis-aligned boxes."""
    ax0, ay0, ax1, ay1 = bbox(a)
    bx0, by0, bx1, by1 = bbox(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
