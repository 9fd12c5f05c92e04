"""OCR engines with real models: RapidOCR's bundled PP-OCR weights, and tiny random surya models.

RapidOCR must read rendered pages nearly perfectly. The surya models are random (tests/surya_tiny.py), so their
text is arbitrary: those tests check the structure, the prompt, the cache and the error messages.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import surya_tiny
from mls_helpers import ROOT
from mls_render import iou, render_page
from rapidfuzz.distance import Levenshtein

from marker_ls_plugin.domain.engines import drop_engine, get_engine
from marker_ls_plugin.ocr import pool as engine_pool
from marker_ls_plugin.ocr.rapidocr import RapidOCREngine
from marker_ls_plugin.ocr.surya import SuryaEngine
from marker_ls_plugin.ocr.types import EngineUnavailable, OCRLine, PageOCR

PAGE_A = [
    "Invoice 2024-117 dated 12.03.2024",
    "Total due: 1,234.56 EUR (incl. 19% VAT)",
    "Contact: billing@example.com",
    "Order #A-5521 shipped to Berlin",
]
PAGE_B = [
    "Delivery note 88-301",
    "Quantity 12 x 4.75 = 57.00",
    "Signed by J. Smith on 2025-01-09",
]
SURYA_SPECIALS = set(surya_tiny.SYSTEM_TOKENS + surya_tiny.FORMATTING_TOKENS + surya_tiny.MATH_EXTERNAL_TOKENS)


@pytest.fixture(scope="module", autouse=True)
def fresh_engine_cache():
    engine_pool.clear_engines()
    yield
    engine_pool.clear_engines()


def flat(polygon) -> list[float]:
    return [v for point in polygon for v in point]


def assert_inside(line: OCRLine, width: int, height: int) -> None:
    assert len(line.polygon) == 4
    assert all(0 <= x <= width and 0 <= y <= height for x, y in line.polygon), line.polygon
    assert isinstance(line.confidence, float) and 0.0 <= line.confidence <= 1.0


def transparent(image):
    """Black text on a fully transparent background: a plain convert('RGB') would make it all black."""
    from PIL import Image, ImageOps

    rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))
    rgba.putalpha(ImageOps.invert(image.convert("L")))
    return rgba


def test_importing_the_engines_imports_no_model_library():
    code = ("import sys, marker_ls_plugin.ocr.pool\n"
            "heavy = ('torch', 'surya', 'transformers', 'rapidocr', 'onnxruntime', 'cv2', 'numpy', 'PIL')\n"
            "print([name for name in heavy if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(ValueError, match="known engines: rapidocr, surya"):
        get_engine("tesseract")


# --- RapidOCR ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rapidocr():
    return get_engine("rapidocr")


def test_rapidocr_reads_pages(rapidocr):
    page_a, truth_a = render_page(PAGE_A, (1000, 400), 30)
    page_b, truth_b = render_page(PAGE_B, (900, 300), 28, font_path="/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")

    results = rapidocr.recognize_pages([page_a, transparent(page_b)])

    assert len(results) == 2
    for result, image, lines, truth in zip(results, (page_a, page_b), (PAGE_A, PAGE_B), (truth_a, truth_b),
                                           strict=True):
        assert isinstance(result, PageOCR) and (result.width, result.height) == image.size
        assert len(result.lines) == len(lines), [line.text for line in result.lines]
        errors, order = 0, []
        for text, polygon in zip(lines, truth, strict=True):
            found = max(result.lines, key=lambda line: iou(line.polygon, polygon))  # noqa: B023
            assert iou(found.polygon, polygon) > 0.5, (text, found)
            assert_inside(found, *image.size)
            errors += Levenshtein.distance(text, found.text)
            order.append(result.lines.index(found))
        assert errors / sum(map(len, lines)) < 0.02, [line.text for line in result.lines]
        assert order == list(range(len(lines)))  # reading order, top to bottom
    assert rapidocr.recognize_pages([]) == []


def test_rapidocr_reads_given_regions_straight_and_rotated(rapidocr):
    for rotate in (0, 4):
        page, truth = render_page(PAGE_A, (1000, 400), 30, rotate_deg=rotate)

        lines = rapidocr.recognize_regions(page, truth)

        assert [line.text for line in lines] == PAGE_A, rotate
        for line, polygon in zip(lines, truth, strict=True):
            assert flat(line.polygon) == pytest.approx(flat(polygon))
            assert line.confidence > 0.8


def test_regions_are_clipped_and_empty_ones_kept_in_place(rapidocr):
    page, truth = render_page(PAGE_B, (900, 300), 28)
    outside = [(-50, -50), (-10, -50), (-10, -10), (-50, -10)]
    past_edge = [(600, 200), (1200, 200), (1200, 400), (600, 400)]

    lines = rapidocr.recognize_regions(page, [truth[1], outside, past_edge])

    assert len(lines) == 3
    assert lines[0].text == PAGE_B[1]
    assert lines[1] == OCRLine([(0.0, 0.0)] * 4, "", 0.0)
    assert lines[2].polygon == [(600, 200), (900, 200), (900, 300), (600, 300)]
    for line in lines:
        assert_inside(line, *page.size)
    with pytest.raises(ValueError, match="at least 3"):
        rapidocr.recognize_regions(page, [[(0, 0), (5, 5)]])


def test_get_engine_returns_the_loaded_rapidocr_once(rapidocr):
    assert get_engine("rapidocr") is rapidocr
    assert rapidocr.loads == 1
    assert rapidocr.version.startswith("rapidocr-3.")


def test_rapidocr_reads_a_page_larger_than_it_works_at_in_that_pages_pixels(rapidocr):
    from PIL import Image

    assert rapidocr.max_page_side == rapidocr._ocr.max_side_len  # RapidOCR shrinks every page to this itself
    page, truth = render_page(PAGE_A, (1000, 400), 30)
    big = page.resize((6000, 2400), Image.Resampling.LANCZOS)

    (result,) = rapidocr.recognize_pages([big])

    assert (result.width, result.height) == (6000, 2400)
    assert [line.text for line in result.lines] == PAGE_A
    for line, polygon in zip(result.lines, truth, strict=True):
        assert iou(line.polygon, [(x * 6, y * 6) for x, y in polygon]) > 0.5, line
        assert_inside(line, 6000, 2400)


def test_rapidocr_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # what `import rapidocr` does when it is not installed

    with pytest.raises(EngineUnavailable, match="pip install rapidocr onnxruntime"):
        RapidOCREngine().load()


# --- surya (tiny random models) ------------------------------------------------------------------------------------


def surya_options(tiny_surya, **extra):
    return {"recognition_checkpoint": str(tiny_surya["recognition"]),
            "detection_checkpoint": str(tiny_surya["detection"]), "device": "cpu", "max_tokens": 8, **extra}


@pytest.fixture(scope="module")
def surya(tiny_surya):
    return get_engine("surya", **surya_options(tiny_surya))


def assert_plain_text(line: OCRLine) -> None:
    assert isinstance(line.text, str)
    assert not any(token in line.text for token in SURYA_SPECIALS), line.text


def test_surya_pages(surya):
    pages = [render_page(PAGE_A, (1000, 400), 30)[0], render_page(PAGE_B, (700, 260), 28)[0]]

    results = surya.recognize_pages(pages)

    assert [(r.width, r.height) for r in results] == [p.size for p in pages]
    for result in results:
        assert len(result.lines) >= 1  # the tiny detector's biased head reports text (surya_tiny)
        for line in result.lines:
            assert_inside(line, result.width, result.height)
            assert_plain_text(line)


def test_surya_reads_a_huge_page_at_its_own_size_and_answers_in_the_pages_pixels(surya, monkeypatch):
    from PIL import Image

    seen = []
    read = surya._recognize_pages
    monkeypatch.setattr(surya, "_recognize_pages", lambda images: seen.extend(i.size for i in images) or read(images))
    page = render_page(PAGE_A, (1000, 400), 30)[0].resize((10_000, 4000), Image.Resampling.BILINEAR)

    (result,) = surya.recognize_pages([page])

    assert seen == [(4096, 1638)] and surya.max_page_side == 4096
    assert (result.width, result.height) == (10_000, 4000) and result.lines
    for line in result.lines:
        assert_inside(line, 10_000, 4000)
    assert max(x for line in result.lines for x, _ in line.polygon) > 4096  # scaled back, not clipped


def test_surya_regions(surya):
    page, truth = render_page(PAGE_A, (1000, 400), 30)
    past_edge = [(900, 300), (1200, 300), (1200, 500), (900, 500)]
    outside = [(-50, -50), (-10, -50), (-10, -10), (-50, -10)]
    polygons = [*truth, past_edge, outside]

    lines = surya.recognize_regions(page, polygons)

    assert len(lines) == len(polygons)
    for line, polygon in zip(lines[: len(truth)], truth, strict=True):
        assert flat(line.polygon) == pytest.approx(flat(polygon))
    assert lines[len(truth)].polygon == [(900, 300), (1000, 300), (1000, 400), (900, 400)]
    assert lines[-1] == OCRLine([(0.0, 0.0)] * 4, "", 0.0)
    for line in lines:
        assert_inside(line, *page.size)
        assert_plain_text(line)
    assert surya.recognize_regions(page, polygons) == lines  # greedy decoding is deterministic


def test_surya_predicts_with_the_fine_tuning_prompt_and_no_lookahead(surya, monkeypatch):
    foundation = surya._recognition.foundation_predictor
    calls = []
    real_loop = foundation.prediction_loop

    def recording_loop(**kwargs):
        calls.append({k: kwargs[k] for k in ("task_names", "math_mode", "max_lookahead_tokens", "max_tokens")})
        return real_loop(**kwargs)

    monkeypatch.setattr(foundation, "prediction_loop", recording_loop)
    page, truth = render_page(PAGE_B, (900, 300), 28)
    surya.recognize_regions(page, truth)
    surya.recognize_pages([page])

    assert calls and all(call["math_mode"] is False and call["max_lookahead_tokens"] == 0 and call["max_tokens"] == 8
                         for call in calls)
    assert {name for call in calls for name in call["task_names"]} == {"ocr_without_boxes"}
    assert foundation.model.config.multi_output_distance == 0


def test_get_engine_loads_each_checkpoint_once_under_concurrency(tiny_surya):
    options = surya_options(tiny_surya, max_tokens=6)
    drop_engine("surya", **options)  # a key nothing has loaded yet, whatever ran before
    barrier = threading.Barrier(4)

    def first_call(_):
        barrier.wait()
        return get_engine("surya", **options)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(first_call, range(4)))

    engine = got[0]
    assert all(other is engine for other in got)
    assert engine.loads == 1
    assert get_engine("surya", **options, batch_size=None) is engine  # None options are defaults
    assert engine.version == str(tiny_surya["recognition"])

    page, truth = render_page(PAGE_B, (900, 300), 28)
    serial = engine.recognize_regions(page, truth)
    with ThreadPoolExecutor(3) as pool:  # the engine serialises calls; surya's predictors are not re-entrant
        assert list(pool.map(lambda _: engine.recognize_regions(page, truth), range(3))) == [serial] * 3


def test_surya_missing_local_checkpoint_names_the_setting(tiny_surya, tmp_path):
    with pytest.raises(EngineUnavailable, match="Set MARKER_LS_SURYA_RECOGNITION_CHECKPOINT to a directory"):
        get_engine("surya", **surya_options(tiny_surya, recognition_checkpoint=str(tmp_path / "missing")))
    with pytest.raises(EngineUnavailable, match="Set MARKER_LS_SURYA_DETECTION_CHECKPOINT to a directory"):
        SuryaEngine(**surya_options(tiny_surya, detection_checkpoint=str(tmp_path))).load()


@pytest.fixture
def empty_surya_cache(tiny_surya, tmp_path, monkeypatch):
    from surya.settings import settings

    cache = tmp_path / "datalab-cache"
    monkeypatch.setattr(settings, "MODEL_CACHE_DIR", str(cache))
    return cache


def test_surya_default_checkpoint_offline_says_what_to_set(empty_surya_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    for _ in range(2):  # a failed load is not cached
        with pytest.raises(EngineUnavailable) as error:
            get_engine("surya", device="cpu")
        message = str(error.value)
        assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT and MARKER_LS_SURYA_DETECTION_CHECKPOINT" in message
        assert "MODEL_CACHE_DIR" in message and "marker-ls models scan" in message and "MARKER_LS[" not in message
        assert f"surya's cache at {empty_surya_cache}" in message
    assert not empty_surya_cache.exists()


def test_surya_default_checkpoint_download_failure_is_wrapped(empty_surya_cache, monkeypatch):
    from huggingface_hub import constants
    from surya.settings import settings

    with socket.socket() as sock:  # a port nobody listens on: the connection is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(settings, "S3_BASE_URL", f"http://127.0.0.1:{port}")

    with pytest.raises(EngineUnavailable, match="could not be downloaded from http://127.0.0.1") as error:
        SuryaEngine(device="cpu").load()
    message = str(error.value)
    assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in message and "\n" not in message
    assert f"{port}/text_recognition/2025_09_23: connection refused (ConnectionRefusedError)" in message


# --- the per-process cache ----------------------------------------------------------------------------------------


@pytest.fixture
def cache_size():
    """Set ENGINE_CACHE_SIZE for a test, starting from an empty cache."""
    from django.conf import settings
    from django.test import override_settings

    engine_pool.clear_engines()
    overrides = []

    def set_size(size):
        override = override_settings(MARKER_LS={**settings.MARKER_LS, "ENGINE_CACHE_SIZE": size})
        override.enable()
        overrides.append(override)

    yield set_size
    for override in reversed(overrides):
        override.disable()
    engine_pool.clear_engines()


def test_the_cache_keeps_the_most_recently_used_engines_and_frees_the_others(tiny_surya, cache_size):
    import weakref

    cache_size(2)
    first = get_engine("surya", **surya_options(tiny_surya, max_tokens=3))
    second = get_engine("surya", **surya_options(tiny_surya, max_tokens=4))
    assert get_engine("surya", **surya_options(tiny_surya, max_tokens=3)) is first  # now the most recent
    model = weakref.ref(second._recognition.foundation_predictor.model)
    detector = weakref.ref(second._detection.model)

    third = get_engine("surya", **surya_options(tiny_surya, max_tokens=5))

    assert engine_pool.loaded_engines() == [first, third]
    assert first.loaded and third.loaded and (first.loads, third.loads) == (1, 1)
    assert not second.loaded and model() is None and detector() is None  # freed, not only forgotten
    again = get_engine("surya", **surya_options(tiny_surya, max_tokens=4))
    assert again is not second and again.loads == 1 and engine_pool.loaded_engines() == [third, again]
    assert not first.loaded

    page, truth = render_page(PAGE_B, (900, 300), 28)  # whoever kept an evicted engine still gets answers
    assert len(first.recognize_regions(page, truth)) == len(truth)
    assert not first.loaded and first.loads == 2


def test_an_engine_released_while_reading_frees_its_models_when_the_call_returns(tiny_surya):
    engine = SuryaEngine(**surya_options(tiny_surya))
    engine.load()
    reading, proceed = threading.Event(), threading.Event()
    read = engine._recognize_regions

    def slow_read(*args):
        reading.set()
        assert proceed.wait(60)
        return read(*args)

    engine._recognize_regions = slow_read
    page, truth = render_page(PAGE_B, (900, 300), 28)
    with ThreadPoolExecutor(1) as pool:
        lines = pool.submit(engine.recognize_regions, page, truth)
        assert reading.wait(60)
        engine.release()  # does not wait for the call
        assert engine.loaded
        proceed.set()
        assert len(lines.result(60)) == len(truth)
    assert not engine.loaded and engine._recognition is None


def test_drop_engine_frees_one_engine(tiny_surya, cache_size):
    cache_size(3)
    kept = get_engine("surya", **surya_options(tiny_surya, max_tokens=3))
    dropped = get_engine("surya", **surya_options(tiny_surya, max_tokens=4))

    assert drop_engine("surya", **surya_options(tiny_surya, max_tokens=4))

    assert engine_pool.loaded_engines() == [kept] and not dropped.loaded
    assert not drop_engine("surya", **surya_options(tiny_surya, max_tokens=4))


@pytest.mark.parametrize("size", [0, -1, "2", 1.5, None])
def test_a_bad_cache_size_names_the_setting(cache_size, size):
    from django.core.exceptions import ImproperlyConfigured

    cache_size(size)
    with pytest.raises(ImproperlyConfigured, match=r"MARKER_LS\['ENGINE_CACHE_SIZE'\]"):
        get_engine("rapidocr")
