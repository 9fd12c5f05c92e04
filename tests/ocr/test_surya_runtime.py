"""surya-ocr 0.17.1 runs on Label Studio's Pillow and opencv (no Django).

surya-ocr 0.17.1 declares ``pillow<11`` and ``opencv-python-headless==4.11.0.86``;
the plugin installs it with ``--no-deps`` next to Label Studio's newer
Pillow/opencv. These tests load tiny random models of surya's real
architecture (tests/surya_tiny.py) through surya's own loaders from local
directories, fully offline, and run detection and recognition end to end.
Random weights give arbitrary output, so only types and shapes are checked.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import surya_tiny  # tests/ is on sys.path (conftest)

# Small so that untrained decoders stop quickly.
MAX_TOKENS = 8

LINES = ["Invoice 2024-117", "Total due: 42.00 EUR", "Label Studio OCR"]


@pytest.fixture(scope="module")
def det_predictor(tiny_surya):
    from surya.detection import DetectionPredictor

    det = DetectionPredictor(checkpoint=str(tiny_surya["detection"]), device="cpu")
    det.disable_tqdm = True
    return det


@pytest.fixture(scope="module")
def rec_predictor(tiny_surya):
    from surya.foundation import FoundationPredictor
    from surya.recognition import RecognitionPredictor

    foundation = FoundationPredictor(checkpoint=str(tiny_surya["recognition"]), device="cpu")
    foundation.disable_tqdm = True
    rec = RecognitionPredictor(foundation)
    rec.disable_tqdm = True
    return rec


@pytest.fixture(scope="module")
def page_image():
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (640, 220), "white")
    draw = ImageDraw.Draw(img)
    font_path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if font_path.exists():
        font = ImageFont.truetype(str(font_path), 28)
    else:
        font = ImageFont.load_default()
    for i, line in enumerate(LINES):
        draw.text((24, 20 + 64 * i), line, fill="black", font=font)
    return img


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_installed_versions_are_label_studios_not_suryas_pins():
    import cv2
    import PIL

    assert importlib.metadata.version("surya-ocr") == "0.17.1"

    pillow = importlib.metadata.version("pillow")
    assert _major_minor(pillow)[0] >= 12, pillow  # surya pins pillow<11
    assert PIL.__version__ == pillow

    opencv = importlib.metadata.version("opencv-python-headless")
    assert _major_minor(opencv) == (4, 12), opencv  # surya pins 4.11.0.86
    assert cv2.__version__.startswith("4.12."), cv2.__version__


def test_tiny_models_are_small_and_saved_as_surya_expects(tiny_surya):
    rec_dir, det_dir = tiny_surya["recognition"], tiny_surya["detection"]
    for name in (
        "config.json",
        "model.safetensors",
        "vocab_math.json",
        "specials.json",
        "specials_dict.json",
        "tokenizer_config.json",
    ):
        assert (rec_dir / name).is_file(), name
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (det_dir / name).is_file(), name

    assert 1_000_000 < surya_tiny.count_parameters(rec_dir) < 10_000_000
    assert 10_000 < surya_tiny.count_parameters(det_dir) < 2_000_000


def test_build_is_deterministic(tiny_surya, tmp_path):
    import torch
    from safetensors.torch import load_file

    again = surya_tiny.build_tiny_models(tmp_path)
    for kind in ("recognition", "detection"):
        first = load_file(str(tiny_surya[kind] / "model.safetensors"))
        second = load_file(str(again[kind] / "model.safetensors"))
        assert first.keys() == second.keys(), kind
        assert all(torch.equal(first[k], second[k]) for k in first), kind
        for name in ("config.json", "specials_dict.json", "preprocessor_config.json"):
            if (tiny_surya[kind] / name).exists():
                assert (tiny_surya[kind] / name).read_text() == (again[kind] / name).read_text(), (kind, name)


def test_loaders_read_local_directories(tiny_surya, det_predictor, rec_predictor):
    from surya.common.surya import SuryaModel
    from surya.detection.model.encoderdecoder import (
        EfficientViTForSemanticSegmentation,
    )
    from surya.detection.processor import SegformerImageProcessor

    assert isinstance(det_predictor.model, EfficientViTForSemanticSegmentation)
    assert isinstance(det_predictor.processor, SegformerImageProcessor)
    assert det_predictor.processor.size == {"height": 512, "width": 512}

    foundation = rec_predictor.foundation_predictor
    assert isinstance(foundation.model, SuryaModel)
    assert str(foundation.model.device) == "cpu"
    # The processor's special-token ids come from the tokenizer files; the
    # model config must agree with them.
    config, processor = foundation.model.config, foundation.processor
    assert processor.image_token_id == config.image_token_id
    assert processor.pad_token_id == config.pad_token_id
    assert processor.eos_token_id == config.eos_token_id
    assert processor.eoi_token_id == config.eoi_token_id
    assert processor.register_token_ids == list(config.register_token_ids)
    assert processor.vocab_size == config.vocab_size


def test_detection_on_rendered_page(det_predictor, page_image):
    from PIL import Image
    from surya.common.polygon import PolygonBox
    from surya.detection.schema import TextDetectionResult

    results = det_predictor([page_image.copy()], include_maps=True)
    assert len(results) == 1
    result = results[0]
    assert isinstance(result, TextDetectionResult)
    assert result.image_bbox == [0, 0, *page_image.size]
    assert isinstance(result.bboxes, list)
    # The tiny detector's text logit is biased (surya_tiny), so it reports text.
    assert len(result.bboxes) >= 1
    width, height = page_image.size
    for box in result.bboxes:
        assert isinstance(box, PolygonBox)
        assert len(box.polygon) == 4
        assert all(len(point) == 2 for point in box.polygon)
        x0, y0, x1, y1 = box.bbox
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert 0.0 <= box.confidence <= 1.0

    size = det_predictor.processor.size
    for image_map in (result.heatmap, result.affinity_map):
        assert isinstance(image_map, Image.Image)
        assert image_map.size == (size["width"], size["height"])

    # Without include_maps the maps are left out.
    plain = det_predictor([page_image.copy()])[0]
    assert plain.heatmap is None and plain.affinity_map is None


def _assert_ocr_result(result, image, expected_polygons=None):
    from surya.recognition.schema import OCRResult, TextChar, TextLine

    assert isinstance(result, OCRResult)
    assert result.image_bbox == [0, 0, *image.size]
    if expected_polygons is not None:
        assert len(result.text_lines) == len(expected_polygons)
    for i, line in enumerate(result.text_lines):
        assert isinstance(line, TextLine)
        assert isinstance(line.text, str)
        assert isinstance(line.confidence, float)
        assert 0.0 <= line.confidence <= 1.0
        assert len(line.polygon) == 4
        assert all(len(point) == 2 for point in line.polygon)
        if expected_polygons is not None:
            assert line.polygon == [[float(x), float(y)] for x, y in expected_polygons[i]]
        assert len(line.chars) <= MAX_TOKENS
        for char in line.chars:
            assert isinstance(char, TextChar)
            assert isinstance(char.text, str)
            assert 0.0 <= char.confidence <= 1.0


def _bbox_polygon(bbox):
    x0, y0, x1, y1 = bbox
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_recognition_with_given_bboxes(rec_predictor, page_image):
    bboxes = [[16, 12 + 64 * i, 460, 64 + 64 * i] for i in range(len(LINES))]

    results = rec_predictor([page_image], bboxes=[bboxes], max_tokens=MAX_TOKENS)

    assert len(results) == 1
    _assert_ocr_result(results[0], page_image, expected_polygons=[_bbox_polygon(b) for b in bboxes])


def test_recognition_with_polygons_and_without_boxes_task(rec_predictor, page_image):
    polygons = [_bbox_polygon([16, 12, 460, 64]), _bbox_polygon([16, 76, 460, 128])]

    results = rec_predictor(
        [page_image],
        polygons=[polygons],
        task_names=["ocr_without_boxes"],
        math_mode=False,
        max_tokens=MAX_TOKENS,
    )

    _assert_ocr_result(results[0], page_image, expected_polygons=polygons)


def test_recognition_full_page_with_detector(rec_predictor, det_predictor, page_image):
    detected = det_predictor([page_image.copy()])[0]

    results = rec_predictor([page_image], det_predictor=det_predictor, max_tokens=MAX_TOKENS)

    assert len(results) == 1
    assert len(detected.bboxes) >= 1
    _assert_ocr_result(results[0], page_image, expected_polygons=[b.polygon for b in detected.bboxes])
