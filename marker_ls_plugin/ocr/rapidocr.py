"""RapidOCR's engine: PP-OCR detection and recognition on onnxruntime, CPU, models inside its wheel.

rapidocr, onnxruntime, numpy and cv2 are imported when the models load, not with this module.
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import TYPE_CHECKING

from marker_ls_plugin.ocr.base import Engine, clip, confidence
from marker_ls_plugin.ocr.types import EngineUnavailable, OCRLine, PageOCR, Point

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["RAPIDOCR_MAX_PAGE_SIDE", "RapidOCREngine"]


RAPIDOCR_MAX_PAGE_SIDE = 2000


class RapidOCREngine(Engine):
    """RapidOCR 3.x on onnxruntime with the PP-OCR models inside its wheel: fully offline, CPU, not trainable."""

    name = "rapidocr"
    batches_pages = False  # it reads the pages of a call one after another

    def __init__(self) -> None:
        super().__init__()
        self._ocr = None

    @property
    def version(self) -> str:
        try:
            return f"rapidocr-{importlib.metadata.version('rapidocr')}"
        except importlib.metadata.PackageNotFoundError:
            return "rapidocr"

    def _load(self) -> None:
        try:
            import numpy as np  # deferred, as every model library here: loaded with the model
            import onnxruntime  # noqa: F401  rapidocr does not declare it, and imports it only at the first call
            from rapidocr import RapidOCR  # deferred with the model
        except ImportError as exc:
            raise EngineUnavailable(f"RapidOCR cannot be imported ({exc}): pip install rapidocr onnxruntime") from exc
        ocr = RapidOCR(params={"Global.log_level": "error"})
        # The ONNX sessions are created at their first use; do it now so that load() means loaded.
        blank = np.full((48, 160, 3), 255, np.uint8)
        ocr(blank, use_det=True, use_cls=False, use_rec=False)
        ocr(blank, use_det=False, use_cls=False, use_rec=True)
        self._ocr = ocr

    def _unload(self) -> None:
        self._ocr = None

    @property
    def max_page_side(self) -> int:
        # RapidOCR shrinks every page to Global.max_side_len (2000) before detecting and crops lines from that.
        return RAPIDOCR_MAX_PAGE_SIDE

    def _recognize_pages(self, images: list[Image.Image]) -> list[PageOCR]:
        pages = []
        for image in images:
            # The 180-degree line classifier is off: pages arrive upright, and it costs time and can flip lines.
            result = self._ocr(_bgr(image), use_det=True, use_cls=False, use_rec=True)
            boxes = [] if result.boxes is None or result.txts is None else result.boxes
            lines = [OCRLine(clip(box, *image.size), text.strip(), confidence(score))
                     for box, text, score in zip(boxes, result.txts or (), result.scores or (), strict=True)]
            pages.append(PageOCR(image.width, image.height, lines))
        return pages

    def _recognize_regions(self, image: Image.Image, polygons: list[list[Point]]) -> list[OCRLine]:
        pixels = _bgr(image)
        lines = []
        for polygon in polygons:
            result = self._ocr(_crop(pixels, polygon), use_det=False, use_cls=False, use_rec=True)
            texts, scores = getattr(result, "txts", None), getattr(result, "scores", None)
            if texts and texts[0].strip():
                lines.append(OCRLine(polygon, texts[0].strip(), confidence(scores[0])))
            else:
                lines.append(OCRLine(polygon, "", 0.0))
        return lines


def _bgr(image: Image.Image) -> np.ndarray:
    """RapidOCR takes arrays as OpenCV's BGR, like its PP-OCR models were trained."""
    import numpy as np  # deferred: loaded with the model

    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def _crop(pixels: np.ndarray, polygon: list[Point]) -> np.ndarray:
    """The region as an upright strip: a perspective warp of a 4-point polygon, else its bounding box."""
    import cv2  # deferred: loaded with the model
    import numpy as np  # deferred: loaded with the model

    if len(polygon) != 4:
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        polygon = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    tl, tr, br, bl = (np.array(p, np.float32) for p in polygon)
    width = max(1, math.ceil(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
    height = max(1, math.ceil(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))))
    target = np.array([(0, 0), (width, 0), (width, height), (0, height)], np.float32)
    matrix = cv2.getPerspectiveTransform(np.stack([tl, tr, br, bl]), target)
    return cv2.warpPerspective(pixels, matrix, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
