"""OCR engines (surya, RapidOCR) behind one interface, loaded lazily and once per process, a few at a time.

Importing this module imports neither torch nor surya nor rapidocr: they are imported when a model loads.
Images given to an engine are taken as they are (already EXIF-upright); polygons are pixel coordinates in them.
"""

from __future__ import annotations

import abc
import contextlib
import gc
import importlib.metadata
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .types import EngineUnavailable, ImageError, OCRLine, PageOCR, Point

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["ENGINES", "Engine", "RapidOCREngine", "SuryaEngine", "clear_engines", "drop_engine", "get_engine",
           "loaded_engines"]

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
            _free_memory()

    def recognize_pages(self, images: Sequence[Image.Image]) -> list[PageOCR]:
        """Find and read the text lines of each image, batched over the list.

        A page larger than the engine reads (``max_page_side``) is shrunk first; its lines come back in the
        pixels of the image given.
        """
        from marker_ls_plugin.ocr.images import shrink

        limit = self.max_page_side
        rgb = [_to_rgb(shrink(image, limit)) for image in images]
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
        rgb = _to_rgb(image)
        clipped = [_clip(polygon, *rgb.size) for polygon in polygons]
        lines = [OCRLine(polygon, "", 0.0) for polygon in clipped]
        todo = [i for i, polygon in enumerate(clipped) if _area(polygon) >= 1.0]
        if todo:
            with self._in_use():
                found = self._recognize_regions(rgb, [clipped[i] for i in todo])
            for i, line in zip(todo, found, strict=True):
                lines[i] = line
        return lines

    def read_lines(self, images: Sequence[Image.Image]) -> list[OCRLine]:
        """Read each image as one text line (a line crop), as recognize_regions reads a region of a page."""
        rgb = [_to_rgb(image) for image in images]
        if not rgb:
            return []
        with self._in_use():
            return self._read_lines(rgb)

    def _read_lines(self, images: list[Image.Image]) -> list[OCRLine]:
        return [self._recognize_regions(image, [_whole(image)])[0] for image in images]

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


# --- surya ---------------------------------------------------------------------------------------------------------

SURYA_MAX_PAGE_SIDE = 4096
# Formatting tags surya writes into line text; the plugin trains on and annotates plain text.
_FORMATTING_TAG = r"</?(?:b|i|u|sup|sub)>|<br\s*/?>"


class SuryaEngine(Engine):
    """surya-ocr 0.17.1: EfficientViT text detection, then the foundation model reads each line.

    Prediction uses the prompt that fine-tuning trains with: task ``ocr_without_boxes`` and ``math_mode=False``
    (no predicted character boxes fed back, a ``<NO-MATH>`` prompt), and no multi-token lookahead (see _load).
    """

    name = "surya"

    def __init__(
        self,
        recognition_checkpoint: str | os.PathLike | None = None,
        detection_checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.recognition_checkpoint = os.fspath(recognition_checkpoint) if recognition_checkpoint else None
        self.detection_checkpoint = os.fspath(detection_checkpoint) if detection_checkpoint else None
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = max_tokens  # None: surya's per-task limit (224 for line OCR)
        self._detection = self._recognition = None
        self._tags = re.compile(_FORMATTING_TAG)

    @property
    def version(self) -> str:
        if self.recognition_checkpoint:
            return self.recognition_checkpoint
        from surya.settings import settings

        return settings.FOUNDATION_MODEL_CHECKPOINT

    def _load(self) -> None:
        try:
            import torch
            from surya.detection import DetectionPredictor
            from surya.foundation import FoundationPredictor
            from surya.settings import settings
        except ImportError as exc:
            from marker_ls_plugin.ocr.availability import surya_import_problem

            raise EngineUnavailable(surya_import_problem(exc)) from exc

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        kind = torch.device(device).type
        # surya picks dtypes from its own TORCH_DEVICE setting; float32 whenever we run on the CPU.
        dtype = torch.float32 if kind == "cpu" else None
        recognition = _surya_checkpoint(self.recognition_checkpoint, settings.FOUNDATION_MODEL_CHECKPOINT,
                                        "recognition")
        detection = _surya_checkpoint(self.detection_checkpoint, settings.DETECTOR_MODEL_CHECKPOINT, "detection")
        try:
            foundation = FoundationPredictor(checkpoint=recognition, device=device, dtype=dtype)
            detector = DetectionPredictor(checkpoint=detection, device=device, dtype=dtype)
        except Exception as exc:
            from marker_ls_plugin.ocr.availability import first_line, surya_fix

            raise EngineUnavailable(f"surya could not load {recognition} / {detection}: {type(exc).__name__}: "
                                    f"{first_line(exc)}. {surya_fix(settings.MODEL_CACHE_DIR)}") from exc
        # Multi-token lookahead off, for this model only. RecognitionPredictor asks the foundation loop for
        # config.multi_output_distance extra tokens per step, taken while each is >= the process-wide setting
        # FOUNDATION_MULTI_TOKEN_MIN_CONFIDENCE (0.9). Fine-tuning trains the LM head only, so the lookahead heads of
        # a fine-tuned checkpoint are stale and drop characters (docs/research/surya.md section 4). With distance 0
        # get_logits runs the LM head alone and every step yields exactly one greedy token, as surya's layout
        # predictor does (max_lookahead_tokens=0); nothing else in the process changes.
        foundation.model.config.multi_output_distance = 0
        self._attach(foundation, device)
        detector.disable_tqdm = True
        self._detection_batch = settings.DETECTOR_BATCH_SIZE or DetectionPredictor.default_batch_sizes.get(kind, 8)
        self._detection = detector

    def _unload(self) -> None:
        self._detection = self._recognition = None

    @property
    def max_page_side(self) -> int:
        # Detection sees a page at its processor's width (1200 px for surya's checkpoint) and recognition scales
        # every line down to at most 1024x512 pixels (its ocr task's img_size); pages at 192 DPI, what surya
        # reads lines at, are about 1600x2100. Above 4096 px surya would only hold more pixels (it turns the
        # whole page into float32: 12 bytes a pixel) to read lines it scales down anyway.
        return SURYA_MAX_PAGE_SIDE

    def _attach(self, foundation: Any, device: str) -> None:
        from surya.recognition import RecognitionPredictor
        from surya.settings import settings

        recognizer = RecognitionPredictor(foundation)
        # The checkpoint's special tokens too (<b>, <i>, ... and system tokens an untrained model may emit).
        specials = sorted(foundation.processor.ocr_tokenizer.SPECIAL_TOKEN_MAPPING, key=len, reverse=True)
        self._tags = re.compile("|".join([_FORMATTING_TAG, *map(re.escape, specials)]))
        recognizer.disable_tqdm = True
        kind = device.split(":")[0]
        self._recognition_batch = (self.batch_size or settings.RECOGNITION_BATCH_SIZE
                                   or RecognitionPredictor.default_batch_sizes.get(kind, 32))
        self.device = device
        self._recognition = recognizer

    @classmethod
    def around(cls, foundation: Any, device: str, batch_size: int | None = None) -> SuryaEngine:
        """An engine that reads regions and line crops with an already loaded FoundationPredictor.

        Fine-tuning evaluates the model it is training through this, with the exact prediction code
        pre-annotation uses. The caller sets the model's ``multi_output_distance`` (see _load). It has no
        detector: recognize_pages is not available.
        """
        engine = cls(device=device, batch_size=batch_size)
        engine._attach(foundation, device)
        engine._loaded = True
        return engine

    def _predict(self, images: list[Image.Image], **kwargs: Any) -> list:
        return self._recognition(
            images,
            task_names=["ocr_without_boxes"] * len(images),
            math_mode=False,
            recognition_batch_size=self._recognition_batch,
            max_tokens=self.max_tokens,
            **kwargs,
        )

    def _recognize_pages(self, images: list[Image.Image]) -> list[PageOCR]:
        if self._detection is None:
            raise EngineUnavailable("this surya engine was built around a recognition model only (no detector)")
        results = self._predict(images, det_predictor=self._detection, detection_batch_size=self._detection_batch,
                                sort_lines=True)
        return [PageOCR(image.width, image.height, [self._line(line.polygon, line, *image.size)
                                                    for line in result.text_lines])
                for image, result in zip(images, results, strict=True)]

    def _read_lines(self, images: list[Image.Image]) -> list[OCRLine]:
        # One batched call for all crops; surya slices the whole image out of each (no masking).
        results = self._predict(images, polygons=[[_whole(image)] for image in images])
        return [self._line(_whole(image), result.text_lines[0], *image.size)
                for image, result in zip(images, results, strict=True)]

    def _recognize_regions(self, image: Image.Image, polygons: list[list[Point]]) -> list[OCRLine]:
        # surya crops the axis-aligned box of each polygon by integer slicing and masks the outside white.
        ints = [[[round(x), round(y)] for x, y in polygon] for polygon in polygons]
        (result,) = self._predict([image], polygons=[ints])
        lines = zip(polygons, result.text_lines, strict=True)
        return [self._line(polygon, line, *image.size) for polygon, line in lines]

    def _line(self, polygon: Polygon, line: Any, width: int, height: int) -> OCRLine:
        """surya's TextLine as an OCRLine: clipped polygon, plain text, confidence in [0, 1]."""
        text = self._tags.sub("", line.text or "").strip()
        return OCRLine(_clip(polygon, width, height), text, _confidence(line.confidence))


def resolve_surya_checkpoint(checkpoint: str | None = None, *, download: bool = True) -> str:
    """A recognition checkpoint surya can load now (``None``: surya's default), or EngineUnavailable.

    ``download=False`` fetches nothing (web requests): a missing default passes when its host answers.
    """
    from surya.settings import settings

    return _surya_checkpoint(checkpoint, settings.FOUNDATION_MODEL_CHECKPOINT, "recognition", download=download)


def _surya_checkpoint(checkpoint: str | None, default: str, kind: str, *, download: bool = True) -> str:
    """The checkpoint surya can load without a download, or EngineUnavailable saying what to do.

    ``s3://`` ids (surya's defaults) live in surya's MODEL_CACHE_DIR; a missing one is fetched once with surya's
    own downloader (no retries, unlike surya's loader which sleeps between three attempts), unless
    Hugging Face's offline mode (HF_HUB_OFFLINE=1) is on or its host does not answer. With ``download=False``
    nothing is fetched: a missing one passes when its download host answers (availability.engine_problem).
    """
    from huggingface_hub import constants
    from surya.common.s3 import check_manifest, download_directory, join_urls
    from surya.settings import settings

    from marker_ls_plugin.ocr.availability import SURYA_SETTING, download_problem, network_reason, surya_fix

    checkpoint = checkpoint or default
    if checkpoint.startswith("s3://"):
        remote = checkpoint.removeprefix("s3://")
        local = os.path.join(settings.MODEL_CACHE_DIR, remote)
        if check_manifest(local):
            return checkpoint
        missing = f"surya's {kind} weights ({checkpoint}) are not in surya's cache at {settings.MODEL_CACHE_DIR}"
        if constants.HF_HUB_OFFLINE:
            raise EngineUnavailable(f"{missing} and downloads are off (HF_HUB_OFFLINE). "
                                    f"{surya_fix(settings.MODEL_CACHE_DIR)}")
        url = join_urls(settings.S3_BASE_URL, remote)
        problem = download_problem(url)  # offline, fail at once, before surya's downloader logs its raw error
        if download and not problem:
            os.makedirs(local, exist_ok=True)
            try:
                download_directory(remote, local)
            except Exception as exc:
                problem = network_reason(exc)
        if problem:
            raise EngineUnavailable(f"{missing} and could not be downloaded from {url}: {problem}. "
                                    f"{surya_fix(settings.MODEL_CACHE_DIR)}")
        return checkpoint
    path = os.path.expanduser(checkpoint)
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise EngineUnavailable(f"surya's {kind} checkpoint {checkpoint} is not a checkpoint directory (no "
                                f"config.json there). Set MARKER_LS_{SURYA_SETTING[kind]} to a directory saved by "
                                f"fine-tuning, or unset it for surya's default. {surya_fix(settings.MODEL_CACHE_DIR)}")
    return path  # a directory, or a Hugging Face repo id for transformers


# --- RapidOCR ------------------------------------------------------------------------------------------------------


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
            import numpy as np
            import onnxruntime  # noqa: F401  rapidocr does not declare it, and imports it only at the first call
            from rapidocr import RapidOCR
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
            lines = [OCRLine(_clip(box, *image.size), text.strip(), _confidence(score))
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
                lines.append(OCRLine(polygon, texts[0].strip(), _confidence(scores[0])))
            else:
                lines.append(OCRLine(polygon, "", 0.0))
        return lines


def _bgr(image: Image.Image) -> np.ndarray:
    """RapidOCR takes arrays as OpenCV's BGR, like its PP-OCR models were trained."""
    import numpy as np

    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def _crop(pixels: np.ndarray, polygon: list[Point]) -> np.ndarray:
    """The region as an upright strip: a perspective warp of a 4-point polygon, else its bounding box."""
    import cv2
    import numpy as np

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


# --- shared helpers ------------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy; transparency is flattened onto white (a plain convert would turn it black)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ImageError(f"the image is empty ({image.width}x{image.height})")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def rescale_page(page: PageOCR, width: int, height: int) -> PageOCR:
    """``page`` found on a resized copy, in the pixels of the ``width`` x ``height`` image it was made from."""
    if (page.width, page.height) == (width, height):
        return page
    sx, sy = width / page.width, height / page.height
    lines = [OCRLine(_clip([(x * sx, y * sy) for x, y in line.polygon], width, height), line.text, line.confidence)
             for line in page.lines]
    return PageOCR(width, height, lines)


def _free_memory() -> None:
    """Return a released model's memory now: cycles in torch modules keep it until a collection, the C heap
    keeps freed pages, and CUDA's caching allocator keeps freed blocks from other processes until emptied."""
    from marker_ls_plugin.ocr.memory import return_freed_memory

    gc.collect()
    return_freed_memory()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _clip(polygon: Polygon, width: int, height: int) -> list[Point]:
    points = [(float(p[0]), float(p[1])) for p in polygon]
    if len(points) < 3 or not all(math.isfinite(v) for p in points for v in p):
        raise ValueError(f"a polygon needs at least 3 finite points, got {polygon!r}")
    return [(min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))) for x, y in points]


def _whole(image: Image.Image) -> list[Point]:
    """The whole image as a polygon, in integer pixels (surya slices with them)."""
    return [(0, 0), (image.width, 0), (image.width, image.height), (0, image.height)]


def _area(polygon: list[Point]) -> float:
    """Shoelace area."""
    n = len(polygon)
    return abs(sum(polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1]
                   for i in range(n))) / 2


def _confidence(value: Any) -> float:
    value = float(value)
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


# --- the process-wide cache ----------------------------------------------------------------------------------------

ENGINES: dict[str, Callable[..., Engine]] = {"surya": SuryaEngine, "rapidocr": RapidOCREngine}

_engines: OrderedDict[tuple, Engine] = OrderedDict()  # least recently used first
_key_locks: dict[tuple, threading.Lock] = {}
_cache_lock = threading.Lock()


def engine_key(name: str, **options: Any) -> tuple:
    """What identifies a loaded engine: its name and the options that are set."""
    options = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items() if v is not None}
    return name, tuple(sorted(options.items()))


def get_engine(name: str, **options: Any) -> Engine:
    """The loaded engine for ``name`` and ``options``, built and loaded once per process (thread-safe).

    Options that are None are left out, so ``get_engine("surya")`` and ``get_engine("surya", device=None)`` share
    one engine. A failed load (EngineUnavailable) is not cached: the next call tries again. At most
    ``ENGINE_CACHE_SIZE`` engines stay loaded; loading one more frees the least recently used.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    from marker_ls_plugin.conf import positive_int

    size = positive_int("ENGINE_CACHE_SIZE")
    key = engine_key(name, **options)
    with _cache_lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one loader per key; other keys load in parallel
        with _cache_lock:
            engine = _engines.get(key)
        if engine is None:
            engine = ENGINES[name](**dict(key[1]))
            engine.load()
            with _cache_lock:
                _engines[key] = engine
                evicted = _evict(size)
            for old in evicted:
                old.release()
    return engine


def _evict(size: int) -> list[Engine]:
    """Take the least recently used engines out of the cache until ``size`` are left (caller holds the lock)."""
    evicted = []
    while len(_engines) > size:
        key, engine = _engines.popitem(last=False)
        _key_locks.pop(key, None)
        evicted.append(engine)
    return evicted


def drop_engine(name: str, **options: Any) -> bool:
    """Free the engine for ``name`` and ``options`` if this process holds it (e.g. a model no longer active)."""
    key = engine_key(name, **options)
    with _cache_lock:
        engine = _engines.pop(key, None)
        if engine is None:
            return False
        _key_locks.pop(key, None)
    engine.release()
    return True


def loaded_engines() -> list[Engine]:
    """The engines this process holds, least recently used first."""
    with _cache_lock:
        return list(_engines.values())


def clear_engines() -> None:
    """Free every cached engine (tests; a process giving its memory back)."""
    with _cache_lock:
        evicted = list(_engines.values())
        _engines.clear()
        _key_locks.clear()
    for engine in evicted:
        engine.release()
