"""Memory of a process, measured in fresh subprocesses: engines loaded per activation, huge pages in a batch."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import surya_tiny
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from mls_factories import make_project
from mls_helpers import TESTS
from mls_render import bbox, iou, render_page
from tasks.models import Prediction, Task

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.ocr.results import region_to_polygon

MB = 1024  # /proc/self/status counts kB


def run_json(script: str, *args: str, env: dict | None = None, timeout: int = 600) -> dict:
    result = subprocess.run([sys.executable, str(TESTS / script), *args], env={**os.environ, **(env or {})},
                            cwd=TESTS.parent, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- engines: memory does not grow with activations -----------------------------------------------------------


@pytest.fixture(scope="module")
def five_models(tmp_path_factory):
    """Five different tiny surya recognition models (and one detector each engine loads its own copy of)."""
    os.environ.setdefault("TORCH_DEVICE", "cpu")
    root = tmp_path_factory.mktemp("five-models")
    detection = surya_tiny.build_tiny_detection(root / "detection")
    return str(detection), [str(surya_tiny.build_tiny_recognition(root / f"recognition-{i}", seed=i))
                            for i in range(5)]


def activate_five(five_models, cache_size: int) -> dict:
    detection, recognitions = five_models
    return run_json("mls_engine_rss.py", str(cache_size), detection, *recognitions)


def test_rss_stays_flat_over_five_activations_with_the_default_cache(five_models):
    bounded = activate_five(five_models, 2)  # the default ENGINE_CACHE_SIZE
    unbounded = activate_five(five_models, 5)  # what every process did before the cache had a size
    print(f"RSS after 5 activations: {bounded['after'][-1] / MB:.0f} MB with ENGINE_CACHE_SIZE=2, "
          f"{unbounded['after'][-1] / MB:.0f} MB keeping all 5 (baseline {bounded['baseline'] / MB:.0f} MB); "
          f"per activation {json.dumps(bounded['after'])} / {json.dumps(unbounded['after'])} kB")

    assert bounded["held"] == [1, 2, 2, 2, 2] and unbounded["held"] == [1, 2, 3, 4, 5]
    one_model = bounded["after"][1] - bounded["after"][0]  # the second model: no first-load costs in it
    assert one_model > 5 * MB, bounded
    # Three more activations once the cache is full add less than half a model; keeping them adds about three
    # (one_model also holds some first-inference set-up, hence 1.5 for the control).
    assert bounded["after"][4] - bounded["after"][1] < one_model / 2, bounded
    assert unbounded["after"][4] - unbounded["after"][1] > 1.5 * one_model, unbounded


# --- huge pages: decoded and read one at a time, at the size the engine reads --------------------------------


HUGE = (9400, 9400)  # just under MAX_IMAGE_PIXELS (89,478,485)
HUGE_LINES = [
    ["Ledger page 17 of 240", "Opening balance 4,210.00", "Closing balance 3,987.15"],
    ["Customs form B-220", "Declared value 880 EUR", "Origin: Lisbon, Portugal"],
    ["Meeting notes 2025-03-14", "Present: A. Novak, R. Osei", "Next review on 2025-04-02"],
    ["Parts list rev. C", "Bolt M8 x 40, qty 16", "Washer 8.4 mm, qty 32"],
]


def huge_page(lines: list[str]) -> tuple[bytes, list]:
    """A mostly white 9400x9400 RGB PNG (a few hundred kB) with a few text lines; and their polygons."""
    image, truth = render_page(lines, HUGE, 150, margin=600)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), truth


@pytest.fixture(scope="module")
def huge_tasks():
    project = make_project("huge pages")
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    tasks, truths = [], []
    for i, lines in enumerate(HUGE_LINES):
        data, truth = huge_page(lines)
        assert len(data) < 1_000_000  # a small file, a huge image
        path = default_storage.save(f"upload/{project.pk}/huge-{i}.png", ContentFile(data))
        tasks.append(Task.objects.create(project=project, data={"image": f"/data/{path}"}))
        truths.append(truth)
    return project, tasks, truths


def test_a_batch_of_four_huge_pages_peaks_below_one_decoded_page_and_reads_them(huge_tasks):
    project, tasks, truths = huge_tasks
    measured = run_json("mls_preannotate_rss.py", str(project.pk), *(str(task.pk) for task in tasks))
    growth = measured["peak"] - measured["baseline"]
    print(f"4 pages of {HUGE[0]}x{HUGE[1]} in one batch (rapidocr): peak RSS {measured['peak'] / MB:.0f} MB, "
          f"{growth / MB:.0f} MB above the process before it ({measured['baseline'] / MB:.0f} MB; reading one "
          f"2000x2000 page takes rapidocr {measured['engine_peak'] / MB:.0f} MB); "
          f"after {measured['after'] / MB:.0f} MB")

    assert measured["summary"] == {"predicted": 4, "failed": 0, "skipped": 0}
    # One page decoded is 9400*9400*4 bytes (Pillow keeps RGB in 4 bytes a pixel): 337 MB. What the batch may
    # add: the engine reading one page at its own size, and one decoded page (the shrunk ones are 16 MB each).
    # Holding the four decoded pages, as the batch did, is four times that.
    decoded = HUGE[0] * HUGE[1] * 4 / 1024
    assert growth < measured["engine_peak"] + decoded, measured
    for task, lines, truth in zip(tasks, HUGE_LINES, truths, strict=True):
        assert_reads(Prediction.objects.get(task=task), lines, truth)


def assert_reads(prediction: Prediction, lines: list[str], truth: list) -> None:
    """Every line read with its box where it is on the full-size page."""
    regions = {item["id"]: item for item in prediction.result if item["type"] == "rectanglelabels"}
    texts = {item["id"]: item["value"]["text"][0] for item in prediction.result if item["type"] == "textarea"}
    assert sorted(texts.values()) == sorted(lines), texts
    for region_id, region in regions.items():
        assert (region["original_width"], region["original_height"]) == HUGE
        polygon = region_to_polygon(region["value"], *HUGE)
        expected = truth[lines.index(texts[region_id])]
        # The detector's box is the ink grown by its unclip ratio: it covers the line and is centred on it.
        x0, y0, x1, y1 = bbox(expected)
        cx, cy = sum(x for x, _ in polygon) / 4, sum(y for _, y in polygon) / 4
        assert x0 < cx < x1 and y0 < cy < y1, (texts[region_id], polygon, expected)
        assert iou(polygon, expected) > 0.4, (texts[region_id], polygon, expected)
