"""What every OCR engine shares: the Engine interface (load, release, serialised calls) and pure page geometry.

Importing this module imports neither torch nor surya nor rapidocr: the engines import them when a model loads.
Images given to an engine are taken as they are (already EXIF-upright); polygons are pixel coordinates in them.
"""

from __future__ import annotations

import abc
import contextlib
import gc
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from marker_ls_plugin.ocr.memory import return_freed_memory
from marker_ls_plugin.ocr.pixels import shrink, to_rgb
from marker_ls_plugin.ocr.types import OCRLine, PageOCR, Point

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Engine", "Polygon", "area", "clip", "confidence", "free_memory", "rescale_page", "whole"]

Polygon = Sequence[Sequence[float]]


class Engine(abc.ABC):
    """Detection + recognition on whole pages, and recognition of given regions.

    Public methods serialise on a per-engine lock: the predictors keep per-call state and are not re-entrant.
    """

    name: ClassVar[str]
    # Whether reading several pages in one call is faster than one at a time (batches on the device).
    batches_pages: ClassVar[bool] = True

    def __init__(self) -> None:
        self.loads = 0  # how many times this engine has loaded its models; get_engine keeps it at 1
        self._loaded = False
        self._released = False
        self._lock = threading.RLock()

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Identifies the weights (a checkpoint id or package version), e.g. for Label Studio's model_version."""

    def load(self) -> None:
        """Load the models now (idempotent); raises EngineUnavailable with what to install or set."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
                self.loads += 1

    @property
    def loaded(self) -> bool:
        return self._loaded

    def release(self) -> None:
        """Free the models: now, or when the call in progress in another thread returns.

        A released engine still answers (it loads again for the call and frees after), so a caller that kept
        it never fails; the cache hands out a fresh one instead.
        """
        self._released = True
        if self._lock.acquire(blocking=False):
            try:
                self._unload_if_released()
            finally:
                self._lock.release()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        with self._lock:
            self.load()
            try:
                yield
            finally:
                self._unload_if_released()

    def _unload_if_released(self) -> None:
        if self._released and self._loaded:
            self._unload()
            self._loaded = False
            free_memory()

    def recognize_pages(self, images: Sequence[Image.Image]) -> list[PageOCR]:
        """Find and read the text lines of each image, batched over the list.

        A page larger than the engine reads (``max_page_side``) is shrunk first; its lines come back in the
        pixels of the image given.
        """
        limit = self.max_page_side
        rgb = [to_rgb(shrink(image, limit)) for image in images]
        if not rgb:
            return []
        with self._in_use():
            pages = self._recognize_pages(rgb)
        return [rescale_page(page, image.width, image.height) for page, image in zip(pages, images, strict=True)]

    @property
    def max_page_side(self) -> int | None:
        """The longest side, in pixels, of a page this engine reads at full resolution; None: no limit."""
        return None

    def recognize_regions(self, image: Image.Image, polygons: Sequence[Polygon]) -> list[OCRLine]:
        """Read the text inside each polygon, in order; one line per polygon, polygons clipped to the image.

        A polygon with no area inside the image gives empty text with confidence 0.
        """
        rgb = to_rgb(image)
        clipped = [clip(polygon, *rgb.size) for polygon in polygons]
        lines = [OCRLine(polygon, "", 0.0) for polygon in clipped]
        todo = [i for i, polygon in enumerate(clipped) if area(polygon) >= 1.0]
        if todo:
            with self._in_use():
                found = self._recognize_regions(rgb, [clipped[i] for i in todo])
            for i, line in zip(todo, found, strict=True):
                lines[i] = line
        return lines

    def read_lines(self, images: Sequence[Image.Image]) -> list[OCRLine]:
        """Read each image as one text line (a line crop), as recognize_regions reads a region of a page."""
        rgb = [to_rgb(image) for image in images]
        if not rgb:
            return []
        with self._in_use():
            return self._read_lines(rgb)

    def _read_lines(self, images: list[Image.Image]) -> list[OCRLine]:
        return [self._recognize_regions(image, [whole(image)])[0] for image in images]

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _unload(self) -> None:
        """Drop every reference to the loaded models (the memory goes with the last reference)."""

    @abc.abstractmethod
    def _recognize_pages(self, images: list[Image.Image]) -> list[PageOCR]: ...

    @abc.abstractmethod
    def _recognize_regions(self, image: Image.Image, polygons: list[list[Point]]) -> list[OCRLine]:
        """``polygons`` are clipped, have an area, and have at least 3 points."""

    def __repr__(self) -> str:
        version = self.version if self._loaded else "not loaded"  # a default surya version needs surya's settings
        return f"<{type(self).__name__} {version}>"


# --- geometry ---------------------------------------------------------------------------------------------------------


def rescale_page(page: PageOCR, width: int, height: int) -> PageOCR:
    """``page`` found on a resized copy, in the pixels of the ``width`` x ``height`` image it was made from."""
    if (page.width, page.height) == (width, height):
        return page
    sx, sy = width / page.width, height / page.height
    lines = [OCRLine(clip([(x * sx, y * sy) for x, y in line.polygon], width, height), line.text, line.confidence)
             for line in page.lines]
    return PageOCR(width, height, lines)


def free_memory() -> None:
    """Return a released model's memory now: cycles in torch modules keep it until a collection, the C heap
    keeps freed pages, and CUDA's caching allocator keeps freed blocks from other processes until emptied."""
    gc.collect()
    return_freed_memory()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def clip(polygon: Polygon, width: int, height: int) -> list[Point]:
    points = [(float(p[0]), float(p[1])) for p in polygon]
    if len(points) < 3 or not all(math.isfinite(v) for p in points for v in p):
        raise ValueError(f"a polygon needs at least 3 finite points, got {polygon!r}")
    return [(min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))) for x, y in points]


def whole(image: Image.Image) -> list[Point]:
    """The whole image as a polygon, in integer pixels (surya slices with them)."""
    return [(0, 0), (image.width, 0), (image.width, image.height), (0, image.height)]


def area(polygon: list[Point]) -> float:
    """Shoelace area."""
    n = len(polygon)
    return abs(sum(polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1]
                   for i in range(n))) / 2


def confidence(value: Any) -> float:
    value = float(value)
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
