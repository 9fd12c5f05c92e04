"""A project's corrected annotations written as a line-crop fine-tuning dataset (no torch).

Tasks are read in-process from the database (sources.py) or from a running Label Studio over its API
(remote.py); both feed the same code below, so both write the same files.

Layout of ``output_dir``: ``images/<hash>.png`` line crops, ``train.jsonl`` and ``val.jsonl`` (one line per
crop: image, text, label, task, annotation, region, source_image, bbox, rotation) and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marker_ls_plugin.dataset.crops import CropPlan, SkippedRegion, cut, plan_crop
from marker_ls_plugin.dataset.image_urls import task_image_url
from marker_ls_plugin.dataset.regions import Region, annotation_ordering, pair_regions
from marker_ls_plugin.dataset.remote import RemoteSource
from marker_ls_plugin.dataset.sources import AnnotatedTask, DatabaseSource, Source
from marker_ls_plugin.ocr.labeling import controls_from_config
from marker_ls_plugin.ocr.types import ImageError

SPLIT_RULE = "val if int(sha256(f'{seed}:{task}:{region}')[:16], 16) / 2**64 < val_fraction, else train"
CONTENT_HASH_RULE = ("sha256 over the sha256(jsonl line + NUL + sha256(crop bytes)) of every line, tasks in id "
                     "order, the lines of a task sorted")
# Bump when crops of the same inputs would come out different, so that re-exports do not reuse old files.
CROP_VERSION = "1"
_CROP_NAME = re.compile(r"[0-9a-f]{24}\.png")

Progress = Callable[[int, int], None]


def split_of(stable_id: str, seed: int, val_fraction: float) -> str:
    """'train' or 'val', a pure function of the line's id and the seed: lines never change split on re-export."""
    digest = hashlib.sha256(f"{seed}:{stable_id}".encode()).hexdigest()
    return "val" if int(digest[:16], 16) / 2**64 < val_fraction else "train"


def line_split(task: int, region_id: str, seed: int, val_fraction: float) -> str:
    """The split of one annotated line: the export writes it there, and count_lines counts it there."""
    return split_of(f"{task}:{region_id}", seed, val_fraction)


def export_annotations_for_finetuning(project_id: int, output_dir: str, *, labels: list[str] | None = None,
                                      val_fraction: float = 0.1, seed: int = 0, padding: int = 4,
                                      annotation_rule: str = "ground_truth_else_latest",
                                      progress: Progress | None = None, url: str | None = None,
                                      api_key: str | None = None, max_pixels: int | None = None) -> dict[str, Any]:
    """Export one annotation per task (``annotation_rule``) as line crops + text; returns the manifest.

    In-process (Django set up with Label Studio's settings) unless ``url`` names a running Label Studio: then
    tasks and images are read over its API with ``api_key`` (default: the LABEL_STUDIO_API_KEY environment
    variable), with no Django settings needed. Both write the same files for the same project.
    ``max_pixels`` defaults to MARKER_LS["MAX_IMAGE_PIXELS"] in-process, to its default value remotely.
    ``progress(tasks_done, lines_written)`` is called after every task. Raises ValueError when the project
    is missing or not OCR-shaped, when an argument is invalid, or when no region at all is exportable.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if padding < 0:
        raise ValueError(f"padding must be 0 or more, got {padding}")
    annotation_ordering(annotation_rule)  # an unknown rule fails before anything is read
    if url:
        source: Source = RemoteSource(url, api_key or os.environ.get("LABEL_STUDIO_API_KEY", ""), project_id,
                                      max_pixels=max_pixels)
    elif api_key:
        raise ValueError("api_key without url: pass the Label Studio URL to export over its API")
    else:
        source = DatabaseSource(project_id, max_pixels=max_pixels)
    try:
        return export_from_source(source, output_dir, labels=labels, val_fraction=val_fraction, seed=seed,
                                  padding=padding, annotation_rule=annotation_rule, progress=progress)
    finally:
        source.close()


def export_from_source(source: Source, output_dir: str, *, labels: list[str] | None, val_fraction: float,
                       seed: int, padding: int, annotation_rule: str, progress: Progress | None) -> dict[str, Any]:
    """The export proper, whatever the tasks are read from: regions, crops, split, files and manifest."""
    try:
        controls = controls_from_config(source.label_config)
    except ValueError as exc:
        raise ValueError(f"project {source.project} is not an OCR project: {exc}") from exc
    if labels is not None and controls.labels:
        unknown = [name for name in labels if name not in controls.labels]
        if unknown:
            raise ValueError(f"labels {unknown} are not in the project's config ({', '.join(controls.labels)})")

    writer = _Writer(Path(output_dir), seed, val_fraction)
    tasks_done = 0
    try:
        for item in source.tasks(annotation_rule):
            regions, skips = pair_regions(item.result, controls, labels)
            for skip in skips:
                writer.skip(item.task, item.annotation, skip.region, skip.reason)
            if regions:
                _export_task(writer, item, regions, controls.image_key, padding)
            tasks_done += 1
            if progress:
                progress(tasks_done, writer.lines)
    except BaseException:
        writer.abort()
        raise
    if not writer.lines:
        writer.abort()
        raise ValueError(f"nothing to export from project {source.project}: {tasks_done} annotated tasks, "
                         f"no exportable region ({_summary(writer.skip_counts) or 'no regions drawn'})")
    content_hash = writer.finish()
    manifest = {
        "format": "marker-ls-line-crops/1",
        "project": source.project,
        "annotation_rule": annotation_rule,
        "label_config_sha256": hashlib.sha256(source.label_config.encode()).hexdigest(),
        "labels": labels,
        "padding": padding,
        "split": {"rule": SPLIT_RULE, "seed": seed, "val_fraction": val_fraction},
        "counts": {"train": writer.split_counts["train"], "val": writer.split_counts["val"],
                   "per_label": {split: dict(sorted(c.items())) for split, c in writer.label_counts.items()}},
        "tasks": {"exported": tasks_done, "total": source.total_tasks()},
        "content_sha256": content_hash,
        "content_hash_rule": CONTENT_HASH_RULE,
        "skipped": writer.skipped,
        "skipped_counts": dict(sorted(writer.skip_counts.items())),
        "versions": source.versions(),
    }
    _write_atomic(Path(output_dir) / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def count_lines(project_id: int, *, labels: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                annotation_rule: str = "ground_truth_else_latest") -> dict[str, int]:
    """The lines an in-process export would write per split, ``{"train": n, "val": m}``, reading no image.

    Same annotations, labels filter and split as the export; a line whose image turns out unreadable or whose
    box falls outside it is counted here and skipped by the export, so this is an upper bound.
    """
    source = DatabaseSource(project_id)
    try:
        controls = controls_from_config(source.label_config)
    except ValueError:
        return {"train": 0, "val": 0}  # not OCR-shaped: nothing to export
    counts = {"train": 0, "val": 0}
    for item in source.tasks(annotation_rule):
        regions, _ = pair_regions(item.result, controls, labels)
        for region in regions:
            counts[line_split(item.task, region.id, seed, val_fraction)] += 1
    return counts


def _export_task(writer: _Writer, item: AnnotatedTask, regions: list[Region], image_key: str,
                 padding: int) -> None:
    try:
        url = task_image_url(item.data, image_key, item.task)
        image = item.load_image(url)
    except ImageError as exc:
        for region in regions:
            writer.skip(item.task, item.annotation, region.id, str(exc))
        return
    for region in regions:
        try:
            plan = plan_crop(region.value, image.size, padding)
        except SkippedRegion as exc:
            writer.skip(item.task, item.annotation, region.id, str(exc))
            continue
        writer.add(item.task, item.annotation, region, str(url), image, plan)


class _Writer:
    """Writes crops and jsonl lines as they come, keeping counts, a running hash and the names of crops in use."""

    def __init__(self, root: Path, seed: int, val_fraction: float):
        self.root, self.seed, self.val_fraction = root, seed, val_fraction
        (root / "images").mkdir(parents=True, exist_ok=True)
        self.files = {split: open(root / f".{split}.jsonl.tmp", "wb") for split in ("train", "val")}  # noqa: SIM115
        self.split_counts: Counter[str] = Counter()
        self.label_counts: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
        self.skipped: list[dict[str, Any]] = []
        self.skip_counts: Counter[str] = Counter()
        # The content hash runs as lines come (tasks arrive in id order), so memory stays flat.
        self.content = hashlib.sha256()
        self.task: int | None = None
        self.task_digests: list[bytes] = []
        self.count = 0
        self.crops: set[str] = set()

    @property
    def lines(self) -> int:
        return self.count

    def skip(self, task: int, annotation: int, region: str, reason: str) -> None:
        self.skipped.append({"task": task, "annotation": annotation, "region": region, "reason": reason})
        self.skip_counts[reason] += 1

    def add(self, task: int, annotation: int, region: Region, url: str, image: Any, plan: CropPlan) -> None:
        name = hashlib.sha256(json.dumps([CROP_VERSION, url, list(image.size), plan.key()]).encode()).hexdigest()
        name = name[:24] + ".png"
        crop_digest = self._crop(name, image, plan)
        split = line_split(task, region.id, self.seed, self.val_fraction)
        record = {"image": f"images/{name}", "text": region.text, "label": region.label, "task": task,
                  "annotation": annotation, "region": region.id, "source_image": url, "bbox": list(plan.bbox),
                  "rotation": round(plan.rotation, 4)}
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"
        self.files[split].write(line)
        if task != self.task:
            self._hash_task()
            self.task = task
        self.task_digests.append(hashlib.sha256(line + b"\0" + crop_digest).digest())
        self.count += 1
        self.split_counts[split] += 1
        self.label_counts[split][region.label] += 1

    def _crop(self, name: str, image: Any, plan: CropPlan) -> bytes:
        path = self.root / "images" / name
        self.crops.add(name)
        if path.exists():  # same image URL, size, geometry and padding: the same pixels
            return hashlib.sha256(path.read_bytes()).digest()
        buffer = io.BytesIO()
        cut(image, plan).save(buffer, format="PNG")
        _write_atomic(path, buffer.getvalue())
        return hashlib.sha256(buffer.getvalue()).digest()

    def finish(self) -> str:
        """Put the jsonl files in place, drop crops no line uses any more, and return the content hash."""
        for split, handle in self.files.items():
            handle.close()
            os.replace(self.root / f".{split}.jsonl.tmp", self.root / f"{split}.jsonl")
        for path in (self.root / "images").iterdir():
            if _CROP_NAME.fullmatch(path.name) and path.name not in self.crops:
                path.unlink()
        self._hash_task()
        return self.content.hexdigest()

    def _hash_task(self) -> None:
        for digest in sorted(self.task_digests):
            self.content.update(digest)
        self.task_digests = []

    def abort(self) -> None:
        for split, handle in self.files.items():
            handle.close()
            (self.root / f".{split}.jsonl.tmp").unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    # A crop file that exists is reused as is, so a crash must never leave a partial one under its final name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


def load_hf_dataset(output_dir: str):
    """The export as a Hugging Face ``DatasetDict`` ("train", "validation") with ``image`` and ``text`` columns.

    Needs the optional ``datasets`` package. Images are decoded lazily from the crop files.
    """
    import datasets  # heavy (pyarrow, pandas): only when a dataset is loaded

    root = Path(output_dir)
    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        with open(root / f"{split}.jsonl", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        for row in rows:
            row["image"] = str(root / row["image"])
        features = datasets.Features({
            "image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.Value("string"),
            "task": datasets.Value("int64"), "annotation": datasets.Value("int64"),
            "region": datasets.Value("string"), "source_image": datasets.Value("string"),
            "bbox": datasets.Sequence(datasets.Value("int64")), "rotation": datasets.Value("float64"),
        })
        columns = {key: [row[key] for row in rows] for key in features}
        splits[name] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)
