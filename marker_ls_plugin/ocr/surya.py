"""surya's OCR engine: EfficientViT text detection, then the foundation model reads each line.

surya (and torch) are imported when the models load, not with this module.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from marker_ls_plugin.ocr.availability import first_line
from marker_ls_plugin.ocr.base import Engine, Polygon, clip, confidence, whole
from marker_ls_plugin.ocr.checkpoints import surya_checkpoint, surya_fix, surya_import_problem
from marker_ls_plugin.ocr.types import EngineUnavailable, OCRLine, PageOCR, Point

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["SURYA_MAX_PAGE_SIDE", "SuryaEngine"]

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
        models_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.recognition_checkpoint = os.fspath(recognition_checkpoint) if recognition_checkpoint else None
        self.detection_checkpoint = os.fspath(detection_checkpoint) if detection_checkpoint else None
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = max_tokens  # None: surya's per-task limit (224 for line OCR)
        # Where the plugin's registered models live; only named in what-to-do messages (checkpoints.surya_fix).
        self.models_dir = os.fspath(models_dir) if models_dir else None
        self._detection = self._recognition = None
        self._tags = re.compile(_FORMATTING_TAG)

    @property
    def version(self) -> str:
        if self.recognition_checkpoint:
            return self.recognition_checkpoint
        from surya.settings import settings  # deferred: surya's settings import torch

        return settings.FOUNDATION_MODEL_CHECKPOINT

    def _load(self) -> None:
        try:
            import torch  # deferred, as surya below: loaded with the model, not with this module
            from surya.detection import DetectionPredictor  # deferred: with the model
            from surya.foundation import FoundationPredictor  # deferred: with the model
            from surya.settings import settings  # deferred: with the model
        except ImportError as exc:
            raise EngineUnavailable(surya_import_problem(exc)) from exc

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        kind = torch.device(device).type
        # surya picks dtypes from its own TORCH_DEVICE setting; float32 whenever we run on the CPU.
        dtype = torch.float32 if kind == "cpu" else None
        recognition = surya_checkpoint(self.recognition_checkpoint, settings.FOUNDATION_MODEL_CHECKPOINT,
                                       "recognition", models_dir=self.models_dir)
        detection = surya_checkpoint(self.detection_checkpoint, settings.DETECTOR_MODEL_CHECKPOINT, "detection",
                                     models_dir=self.models_dir)
        try:
            foundation = FoundationPredictor(checkpoint=recognition, device=device, dtype=dtype)
            detector = DetectionPredictor(checkpoint=detection, device=device, dtype=dtype)
        except Exception as exc:
            fix = surya_fix(settings.MODEL_CACHE_DIR, self.models_dir)
            raise EngineUnavailable(f"surya could not load {recognition} / {detection}: {type(exc).__name__}: "
                                    f"{first_line(exc)}. {fix}") from exc
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
        from surya.recognition import RecognitionPredictor  # deferred: with the model
        from surya.settings import settings  # deferred: with the model

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
        results = self._predict(images, polygons=[[whole(image)] for image in images])
        return [self._line(whole(image), result.text_lines[0], *image.size)
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
        return OCRLine(clip(polygon, width, height), text, confidence(line.confidence))
