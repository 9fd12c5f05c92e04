"""The fine-tuning export: annotations as Label Studio's editor writes them, on rendered pages, to line crops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mls_factories
import numpy as np
import pytest
from mls_factories import LINES, SIZE, annotate, page_task, region
from mls_render import bbox, render_page
from PIL import Image
from tasks.models import Task

from marker_ls_plugin.export import export_annotations_for_finetuning, split_of
from marker_ls_plugin.ocr.results import rectangle_value


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for split in ("train", "val")
            for line in (out / f"{split}.jsonl").read_text().splitlines()]


def test_axis_aligned_crops_are_pixel_exact(ocr_project, tmp_path):
    project = ocr_project
    task, annotation, image, polygons = page_task(project)
    manifest = export_annotations_for_finetuning(project.pk, str(tmp_path), padding=4)
    lines = {line["region"]: line for line in read_lines(tmp_path)}
    assert set(lines) == {"r0", "r1", "r2"}
    for i, polygon in enumerate(polygons):
        line = lines[f"r{i}"]
        x0, y0, x1, y1 = (int(v) for v in bbox(polygon))
        box = [max(0, x0 - 4), max(0, y0 - 4), min(SIZE[0], x1 + 4), min(SIZE[1], y1 + 4)]
        assert line["bbox"] == box and line["rotation"] == 0
        assert (line["text"], line["label"], line["task"], line["annotation"]) == (LINES[i], "Text", task.pk,
                                                                                  annotation.pk)
        assert line["source_image"] == task.data["image"]
        crop = np.asarray(Image.open(tmp_path / line["image"]))
        assert np.array_equal(crop, np.asarray(image.crop(box)))
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 3
    assert manifest["skipped"] == [] and manifest["versions"]["label_studio"]
    assert json.loads((tmp_path / "manifest.json").read_text())["content_sha256"] == manifest["content_sha256"]


def ink_top(array: np.ndarray) -> int:
    return int(np.argmax((array < 128).any(axis=1)))


def test_rotated_box_is_cropped_horizontal(ocr_project, upload_task, tmp_path):
    project = ocr_project
    text = "A slanted line of text to deskew"
    image, (polygon,) = render_page([text], size=SIZE, font_size=28, rotate_deg=3)
    straight, (straight_polygon,) = render_page([text], size=SIZE, font_size=28)
    task = upload_task(image)
    geometry = rectangle_value(polygon, *SIZE)
    assert abs(geometry["rotation"] - 357) < 0.01  # 3 degrees counter-clockwise, in Label Studio's sense
    annotate(task, region("rot", polygon, text=text))
    export_annotations_for_finetuning(project.pk, str(tmp_path), padding=0, val_fraction=0)
    (line,) = read_lines(tmp_path)
    crop = np.asarray(Image.open(tmp_path / line["image"]).convert("L"))
    x0, y0, x1, y1 = bbox(straight_polygon)
    assert abs(crop.shape[1] - (x1 - x0)) <= 1 and abs(crop.shape[0] - (y1 - y0)) <= 1
    third = crop.shape[1] // 3
    assert abs(ink_top(crop[:, :third]) - ink_top(crop[:, -third:])) <= 1  # level; unrotated it drifts ~20 px
    reference = np.asarray(straight.convert("L").crop((int(x0), int(y0), int(x1), int(y1))).resize(crop.shape[::-1]))
    assert np.abs(crop.astype(int) - reference.astype(int)).mean() < 12
    assert line["rotation"] == pytest.approx(357, abs=0.01)
    assert line["bbox"][3] - line["bbox"][1] > crop.shape[0] + 10  # the page box of a rotated line is taller


def test_split_is_stable_and_reexport_is_identical(ocr_project, tmp_path):
    project = ocr_project
    for n in range(3):
        page_task(project, name=f"p{n}.png")
    first = export_annotations_for_finetuning(project.pk, str(tmp_path / "a"), val_fraction=0.4, seed=7)
    crops = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").iterdir()}
    again = export_annotations_for_finetuning(project.pk, str(tmp_path / "a"), val_fraction=0.4, seed=7)
    elsewhere = export_annotations_for_finetuning(project.pk, str(tmp_path / "b"), val_fraction=0.4, seed=7)
    assert first["content_sha256"] == again["content_sha256"] == elsewhere["content_sha256"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").iterdir()} == crops  # reused
    assert first["counts"]["val"] > 0 and first["counts"]["train"] > 0

    def splits(out):
        return {split: {(r["task"], r["region"]) for r in map(json.loads, (out / f"{split}.jsonl").open())}
                for split in ("train", "val")}

    before = splits(tmp_path / "a")
    for n in range(3, 6):
        page_task(project, name=f"p{n}.png")
    grown = export_annotations_for_finetuning(project.pk, str(tmp_path / "a"), val_fraction=0.4, seed=7)
    after = splits(tmp_path / "a")
    assert before["val"] <= after["val"] and before["train"] <= after["train"]
    assert grown["content_sha256"] != first["content_sha256"]
    assert split_of("1:r0", 7, 0.4) == split_of("1:r0", 7, 0.4)
    assert {split_of(f"{n}:r", 0, 0.5) for n in range(50)} == {"train", "val"}


def test_bad_inputs_are_skipped_with_reasons(ocr_project, upload_task, tmp_path):
    project = ocr_project
    image, polygons = render_page(LINES, size=SIZE, font_size=28)
    task = upload_task(image)
    good = region("good", polygons[0], text=LINES[0])
    empty = region("empty", polygons[1], text="  ")
    unknown = region("unknown", polygons[2], label="Graffiti")
    zero = region("zero", polygons[0], width=0.0)
    outside = region("outside", polygons[0], x=120.0)
    malformed = region("bad", polygons[0], x="left")
    no_value = [{"id": "badpoints", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                 "value": {"points": "here", "rectanglelabels": ["Text"]}}]
    no_id = [{"type": "rectanglelabels", "value": {}}]
    annotate(task, good + empty + unknown + zero + outside + malformed + no_value + no_id)
    missing = Task.objects.create(project=project, data={"image": f"/data/upload/{project.pk}/missing.png"})
    annotate(missing, region("m0", polygons[0]) + region("m1", polygons[1]))
    corrupt = upload_task(name="corrupt.png", raw=b"this is not a png")
    annotate(corrupt, region("c0", polygons[0]))

    manifest = export_annotations_for_finetuning(project.pk, str(tmp_path), val_fraction=0)
    (line,) = read_lines(tmp_path)
    assert (line["region"], line["text"]) == ("good", LINES[0])
    reasons = {(s["task"], s["region"]): s["reason"] for s in manifest["skipped"]}
    assert reasons[(task.pk, "empty")] == "empty text"
    assert reasons[(task.pk, "unknown")] == "unknown label"
    assert reasons[(task.pk, "zero")] == "zero-size box"
    assert reasons[(task.pk, "outside")] == "outside the image"
    assert reasons[(task.pk, "bad")] == reasons[(task.pk, "badpoints")] == reasons[(task.pk, "")] == "malformed region"
    assert "file not found" in reasons[(missing.pk, "m0")] and "file not found" in reasons[(missing.pk, "m1")]
    assert "not an image" in reasons[(corrupt.pk, "c0")]
    assert manifest["skipped_counts"]["malformed region"] == 3 and manifest["counts"]["train"] == 1


def test_label_filter(ocr_project, tmp_path):
    project = ocr_project
    page_task(project, labels=["Text", "Handwriting", "Text"])
    manifest = export_annotations_for_finetuning(project.pk, str(tmp_path), labels=["Handwriting"], val_fraction=0)
    assert [(line["label"], line["text"]) for line in read_lines(tmp_path)] == [("Handwriting", LINES[1])]
    assert manifest["counts"]["per_label"]["train"] == {"Handwriting": 1}
    assert manifest["skipped_counts"] == {"label not selected": 2}
    with pytest.raises(ValueError, match="Graffiti"):
        export_annotations_for_finetuning(project.pk, str(tmp_path), labels=["Graffiti"])


def test_ground_truth_wins_and_cancelled_is_ignored(ocr_project, upload_task, tmp_path):
    project = ocr_project
    image, polygons = render_page(LINES, size=SIZE, font_size=28)
    with_gt = upload_task(image, "gt.png")
    annotate(with_gt, region("r", polygons[0], text="ground truth"), ground_truth=True)
    annotate(with_gt, region("r", polygons[0], text="later, not ground truth"))
    latest = upload_task(image, "latest.png")
    annotate(latest, region("r", polygons[0], text="older"))
    annotate(latest, region("r", polygons[0], text="newer"))
    annotate(latest, region("r", polygons[0], text="cancelled"), was_cancelled=True)
    only_cancelled = upload_task(image, "cancelled.png")
    annotate(only_cancelled, region("r", polygons[0], text="skipped task"), was_cancelled=True)
    Task.objects.create(project=project, data={"image": "/data/upload/none.png"})  # never annotated

    manifest = export_annotations_for_finetuning(project.pk, str(tmp_path))
    texts = {line["task"]: line["text"] for line in read_lines(tmp_path)}
    assert texts == {with_gt.pk: "ground truth", latest.pk: "newer"}
    assert manifest["tasks"] == {"exported": 2, "total": 4}
    assert manifest["annotation_rule"] == "ground_truth_else_latest"


def test_nothing_exportable_says_why(ocr_project, upload_task, tmp_path):
    project = ocr_project
    image, polygons = render_page(LINES, size=SIZE, font_size=28)
    task = upload_task(image)
    annotate(task, region("a", polygons[0], text="") + region("b", polygons[1], label="Graffiti"))
    with pytest.raises(ValueError, match=r"nothing to export .*1 empty text, 1 unknown label"):
        export_annotations_for_finetuning(project.pk, str(tmp_path))
    assert not (tmp_path / "train.jsonl").exists() and not list(tmp_path.glob(".*.tmp"))
    empty_project = mls_factories.ocr_project("empty")
    with pytest.raises(ValueError, match="0 annotated tasks"):
        export_annotations_for_finetuning(empty_project.pk, str(tmp_path))
    with pytest.raises(ValueError, match="no project"):
        export_annotations_for_finetuning(10**9, str(tmp_path))


def test_loads_with_hugging_face_datasets(ocr_project, tmp_path):
    import datasets

    from marker_ls_plugin.export import load_hf_dataset

    project = ocr_project
    page_task(project)
    manifest = export_annotations_for_finetuning(project.pk, str(tmp_path), val_fraction=0.5, seed=1)
    dataset = load_hf_dataset(str(tmp_path))
    assert set(dataset) == {"train", "validation"}
    assert isinstance(dataset["train"].features["image"], datasets.Image)
    assert len(dataset["train"]) == manifest["counts"]["train"]
    assert len(dataset["validation"]) == manifest["counts"]["val"]
    rows = list(dataset["train"]) + list(dataset["validation"])
    assert {row["text"] for row in rows} == set(LINES)
    assert all(row["image"].size[0] > row["image"].size[1] > 10 for row in rows)


def test_cli_prints_progress_and_summary(ocr_project, tmp_path, monkeypatch, capsys):
    from marker_ls_plugin import cli
    from marker_ls_plugin.cli import projects

    monkeypatch.setattr(projects, "setup_django", lambda: None)
    project = ocr_project
    page_task(project, name="a.png")
    page_task(project, name="b.png")
    assert cli.main(["export", "--project", str(project.pk), "--output", str(tmp_path), "--progress-every", "1",
                     "--labels", "Text", "--val-fraction", "0"]) == 0
    out, err = capsys.readouterr()
    assert "1 tasks, 3 lines" in err and "2 tasks, 6 lines" in err
    assert "Exported 6 train and 0 val lines" in out
    assert cli.main(["export", "--project", str(project.pk), "--output", str(tmp_path), "--labels", "Nope"]) == 2
    assert "not in the project's config" in capsys.readouterr().err


def test_importing_the_export_api_does_not_import_torch():
    code = "import sys, marker_ls_plugin.export; sys.exit('torch' in sys.modules or 'django.db' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
