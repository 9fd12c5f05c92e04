"""OCR lines turned into Label Studio prediction results, and drawn regions turned back into polygons.

Label Studio geometry: ``x``/``y``/``width``/``height`` are percent of ``original_width``/``original_height``
(width along the rectangle's own top edge, in percent of the image width, also when rotated); ``rotation``
is in degrees around the top-left corner, clockwise on screen (image y axis points down).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

from marker_ls_plugin.ocr.labeling import OCRControls
from marker_ls_plugin.ocr.types import OCRLine, PageOCR, Point


def line_to_regions(line: OCRLine, width: int, height: int, controls: OCRControls, region_id: str,
                    label: str | None = None) -> list[dict[str, Any]]:
    """One line as two results sharing ``region_id``: the region (rectangle or polygon) and its transcription."""
    points = [_clamp(point, width, height) for point in line.polygon]
    if controls.region_type.startswith("rectangle"):
        geometry = rectangle_value(points, width, height)
    else:
        if len(points) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
        geometry = {"points": [[x / width * 100, y / height * 100] for x, y in points]}
    common = {"id": region_id, "to_name": controls.image, "original_width": width, "original_height": height,
              "image_rotation": 0, "origin": "prediction"}
    region_value = dict(geometry)
    if controls.labeled:
        region_value[controls.region_type] = [label or controls.default_label]
    region = {**common, "from_name": controls.region_control, "type": controls.region_type, "value": region_value,
              "score": _unit(line.confidence)}
    text = {**common, "from_name": controls.textarea, "type": "textarea", "value": {**geometry, "text": [line.text]}}
    return [region, text]


def rectangle_value(polygon: list[Point], width: int, height: int) -> dict[str, float]:
    """The rotated rectangle whose top edge is polygon[0]->polygon[1], in Label Studio's percent units.

    Its height is the left edge polygon[0]->polygon[3] measured perpendicular to the top edge, which is the
    left edge's length for a true rectangle and keeps slanted (italic) quadrilaterals from growing taller.
    """
    if len(polygon) != 4:
        raise ValueError(f"a rectangle needs a 4-point polygon, got {len(polygon)} points")
    (x0, y0), (x1, y1), _, (x3, y3) = polygon
    angle = math.atan2(y1 - y0, x1 - x0)
    box_width = math.hypot(x1 - x0, y1 - y0)
    # Component of the left edge along the top edge's downward normal (-sin, cos).
    box_height = abs(-(x3 - x0) * math.sin(angle) + (y3 - y0) * math.cos(angle))
    rotation = math.degrees(angle) % 360.0
    if rotation >= 360.0 - 1e-9:  # -1e-17 % 360 rounds to 360.0
        rotation = 0.0
    return {"x": x0 / width * 100, "y": y0 / height * 100, "width": box_width / width * 100,
            "height": box_height / height * 100, "rotation": rotation}


def page_to_results(page: PageOCR, controls: OCRControls, label: str | None = None) -> list[dict[str, Any]]:
    """All lines of a page as results; region ids are stable: a short hash of the line's index and polygon."""
    results: list[dict[str, Any]] = []
    for index, line in enumerate(page.lines):
        results += line_to_regions(line, page.width, page.height, controls, region_id(index, line.polygon), label)
    return results


def region_id(index: int, polygon: list[Point]) -> str:
    """A 10-character id, the same for the same line at the same place."""
    key = f"{index}:" + ";".join(f"{x:.2f},{y:.2f}" for x, y in polygon)
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def prediction_score(lines: Iterable[OCRLine]) -> float | None:
    """The task's score: the confidence of its least confident line, clamped to [0, 1].

    The minimum, not a mean, so one unreadable line is enough to bring the task forward when the Data
    Manager is sorted by prediction score ascending. A page without lines scores None (null): there is
    nothing to check, and the Data Manager sorts nulls last in both directions.
    """
    confidences = [_unit(line.confidence) for line in lines]
    return min(confidences) if confidences else None


def region_to_polygon(region_value: dict[str, Any], original_width: float, original_height: float) -> list[Point]:
    """Pixel polygon of a region value: 4 corners clockwise from the top-left for a rectangle, else the points."""
    if "points" in region_value:
        return [(px / 100 * original_width, py / 100 * original_height) for px, py in region_value["points"]]
    x0 = region_value["x"] / 100 * original_width
    y0 = region_value["y"] / 100 * original_height
    box_width = region_value["width"] / 100 * original_width
    box_height = region_value["height"] / 100 * original_height
    angle = math.radians(region_value.get("rotation") or 0.0)
    cos, sin = math.cos(angle), math.sin(angle)
    across = (box_width * cos, box_width * sin)
    down = (-box_height * sin, box_height * cos)
    return [(x0, y0), (x0 + across[0], y0 + across[1]), (x0 + across[0] + down[0], y0 + across[1] + down[1]),
            (x0 + down[0], y0 + down[1])]


def _clamp(point: Point, width: int, height: int) -> Point:
    # Detectors may overshoot the border by a pixel; Label Studio refuses coordinates above 100%.
    x, y = point
    return (min(max(float(x), 0.0), float(width)), min(max(float(y), 0.0), float(height)))


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)
