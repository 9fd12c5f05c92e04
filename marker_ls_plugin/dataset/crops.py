"""Line crops: a Label Studio region value cut out of its upright page image, deskewed when rotated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from marker_ls_plugin.ocr.results import region_to_polygon
from marker_ls_plugin.ocr.types import Point

# Rotations closer to 0 than this (degrees) are cropped axis-aligned: pixel-exact, no resampling.
_STRAIGHT = 0.01
# Sub-pixel noise from the percent round trip (pixel -> percent -> pixel) must not grow a box by one pixel.
_EPS = 1e-6


class SkippedRegion(Exception):
    """A region that gives no crop; the message is the manifest's reason."""


@dataclass(frozen=True)
class CropPlan:
    """Where to cut: an axis-aligned box, or a rotated rectangle sampled upright.

    ``bbox`` is the padded box in page pixels, clipped to the image (for a rotated rectangle, the clipped
    axis-aligned bounds of its padded corners). ``origin``/``size``/``rotation`` describe the rotated
    rectangle, padding included; ``rotation`` is 0 for axis-aligned crops.
    """

    bbox: tuple[int, int, int, int]
    rotation: float = 0.0
    origin: Point = (0.0, 0.0)
    size: tuple[int, int] = (0, 0)

    def key(self) -> str:
        """The plan as text, for naming the crop file."""
        if not self.rotation:
            return "box:" + ",".join(map(str, self.bbox))
        return f"rot:{self.rotation:.4f}:{self.origin[0]:.3f},{self.origin[1]:.3f}:{self.size[0]}x{self.size[1]}"


def plan_crop(value: dict[str, Any], image_size: tuple[int, int], padding: int) -> CropPlan:
    """The crop of a region value (percent units) on an upright image of ``image_size``.

    Percent is of the displayed (upright) image, so it is scaled by the image's actual size; that equals
    ``original_width``/``original_height`` unless the file was resized since it was annotated.
    """
    width, height = image_size
    polygon = _polygon(value, width, height)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
        raise SkippedRegion("outside the image")
    rotation = _rotation(value)
    if "points" in value or not rotation:
        if max(xs) - min(xs) < 0.5 or max(ys) - min(ys) < 0.5:
            raise SkippedRegion("zero-size box")
        box = (math.floor(min(xs) + _EPS) - padding, math.floor(min(ys) + _EPS) - padding,
               math.ceil(max(xs) - _EPS) + padding, math.ceil(max(ys) - _EPS) + padding)
        return CropPlan(bbox=_clip(box, width, height))
    (x0, y0), (x1, y1), _, (x3, y3) = polygon
    box_width, box_height = math.hypot(x1 - x0, y1 - y0), math.hypot(x3 - x0, y3 - y0)
    if box_width < 0.5 or box_height < 0.5:
        raise SkippedRegion("zero-size box")
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    # The padded rectangle's top-left: step back along the top edge and up along the left edge.
    origin = (x0 - padding * cos + padding * sin, y0 - padding * sin - padding * cos)
    size = (round(box_width) + 2 * padding, round(box_height) + 2 * padding)
    corners = [(origin[0] + u * cos - v * sin, origin[1] + u * sin + v * cos)
               for u, v in ((0, 0), (size[0], 0), (size[0], size[1]), (0, size[1]))]
    bounds = (math.floor(min(c[0] for c in corners)), math.floor(min(c[1] for c in corners)),
              math.ceil(max(c[0] for c in corners)), math.ceil(max(c[1] for c in corners)))
    return CropPlan(bbox=_clip(bounds, width, height), rotation=rotation, origin=origin, size=size)


def well_formed(value: dict[str, Any]) -> bool:
    """Whether a region value has usable geometry (numbers where numbers belong, polygons of 3+ points)."""
    try:
        _polygon(value, 100, 100)
    except SkippedRegion:
        return False
    return True


def cut(image: Image.Image, plan: CropPlan) -> Image.Image:
    """The crop: a plain slice when axis-aligned, else the rotated rectangle resampled with its text horizontal.

    Outside the page, a rotated crop is filled white (the background of a scanned page).
    """
    if not plan.rotation:
        return image.crop(plan.bbox)
    angle = math.radians(plan.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (u, v) reads page pixel origin + u * (cos, sin) + v * (-sin, cos).
    data = (cos, -sin, plan.origin[0], sin, cos, plan.origin[1])
    return image.transform(plan.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC,
                           fillcolor="white")


def _polygon(value: dict[str, Any], width: int, height: int) -> list[Point]:
    try:
        if "points" in value:
            points = value["points"]
            if not isinstance(points, list) or len(points) < 3 or any(len(p) != 2 for p in points):
                raise SkippedRegion("malformed region")
        else:
            for key in ("x", "y", "width", "height"):
                _number(value.get(key))
            _number(value.get("rotation") or 0)
        polygon = region_to_polygon(value, width, height)
    except (TypeError, ValueError, KeyError) as exc:
        raise SkippedRegion("malformed region") from exc
    if not all(math.isfinite(c) for point in polygon for c in point):
        raise SkippedRegion("malformed region")
    return polygon


def _number(item: Any) -> float:
    if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
        raise ValueError(f"not a number: {item!r}")
    return float(item)


def _rotation(value: dict[str, Any]) -> float:
    rotation = float(value.get("rotation") or 0.0) % 360.0
    return 0.0 if min(rotation, 360.0 - rotation) < _STRAIGHT else rotation


def _clip(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
