"""A project's corrected annotations written as a line-crop fine-tuning dataset (no torch).

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
from marker_ls_plugin.dataset.regions import Region, annotation_ordering, pair_regions
from marker_ls_plugin.ocr.labeling import controls_from_config

SPLIT_RULE = "val if int(sha256(f'{seed}:{task}:{region}')[:16], 16) / 2**64 < val_fraction, else train"
CONTENT_HASH_RULE = "sha256 over the sorted sha256(jsonl line + NUL + sha256(crop bytes)) of every line"
# Bump when crops of the same inputs would come out different, so that re-exports do not reuse old files.
CROP_VERSION = "1"
_CROP_NAME = re.compile(r"[0-9a-f]{24}\.png")

Progress = Callable[[int, int], None]


def split_of(stable_id: str, seed: int, val_fraction: float) -> str:
    """'train' or 'val', a pure function of the line's id and the seed: lines never change split on re-export."""
    digest = hashlib.sha256(f"{seed}:{stable_id}".encode()).hexdigest()
    return "val" if int(digest[:16], 16) / 2**64 < val_fraction else "train"


def export_annotations_for_finetuning(project_id: int, output_dir: str, *, labels: list[str] | None = None,
                                      val_fraction: float = 0.1, seed: int = 0, padding: int = 4,
                                      annotation_rule: str = "ground_truth_else_latest",
                                      progress: Progress | None = None) -> dict[str, Any]:
    """Export one annotation per task (``annotation_rule``) as line crops + text; returns the manifest.

    ``progress(tasks_done, lines_written)`` is called after every task. Raises ValueError when the project
    is missing or not OCR-shaped, when an argument is invalid, or when no region at all is exportable.
    """
    from projects.models import Project

    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if padding < 0:
        raise ValueError(f"padding must be 0 or more, got {padding}")
    ordering = annotation_ordering(annotation_rule)
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        raise ValueError(f"no project with id {project_id}")
    try:
        controls = controls_from_config(project.label_config)
    except ValueError as exc:
        raise ValueError(f"project {project_id} is not an OCR project: {exc}") from exc
    if labels is not None and controls.labels:
        unknown = [name for name in labels if name not in controls.labels]
        if unknown:
            raise ValueError(f"labels {unknown} are not in the project's config ({', '.join(controls.labels)})")

    writer = _Writer(Path(output_dir), seed, val_fraction)
    tasks_done = 0
    try:
        for task in _annotated_tasks(project, ordering):
            annotation = task.mls_annotations[0]
            regions, skips = pair_regions(annotation.result, controls, labels)
            for skip in skips:
                writer.skip(task.pk, annotation.pk, skip.region, skip.reason)
            if regions:
                _export_task(writer, task, annotation, regions, controls.image_key, padding)
            tasks_done += 1
            if progress:
                progress(tasks_done, writer.lines)
    except BaseException:
        writer.abort()
        raise
    if not writer.lines:
        writer.abort()
        raise ValueError(f"nothing to export from project {project_id}: {tasks_done} annotated tasks, "
                         f"no exportable region ({_summary(writer.skip_counts) or 'no regions drawn'})")
    content_hash = writer.finish()
    manifest = {
        "format": "marker-ls-line-crops/1",
        "project": project.pk,
        "annotation_rule": annotation_rule,
        "label_config_sha256": hashlib.sha256(project.label_config.encode()).hexdigest(),
        "labels": labels,
        "padding": padding,
        "split": {"rule": SPLIT_RULE, "seed": seed, "val_fraction": val_fraction},
        "counts": {"train": writer.split_counts["train"], "val": writer.split_counts["val"],
                   "per_label": {split: dict(sorted(c.items())) for split, c in writer.label_counts.items()}},
        "tasks": {"exported": tasks_done, "total": project.tasks.count()},
        "content_sha256": content_hash,
        "content_hash_rule": CONTENT_HASH_RULE,
        "skipped": writer.skipped,
        "skipped_counts": dict(sorted(writer.skip_counts.items())),
        "versions": _versions(),
    }
    _write_atomic(Path(output_dir) / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def _annotated_tasks(project: Any, ordering: tuple[str, ...]):
    """Tasks with a non-cancelled annotation, streamed in id order; ``mls_annotations[0]`` is the one to export."""
    from django.db.models import Exists, OuterRef, Prefetch
    from tasks.models import Annotation, Task

    kept = Annotation.objects.filter(was_cancelled=False)
    return (Task.objects.filter(project=project)
            .filter(Exists(kept.filter(task=OuterRef("pk"))))
            .order_by("id")
            .prefetch_related(Prefetch("annotations", queryset=kept.order_by(*ordering), to_attr="mls_annotations"))
            .iterator(chunk_size=100))


def _export_task(writer: _Writer, task: Any, annotation: Any, regions: list[Region], image_key: str,
                 padding: int) -> None:
    from django.conf import settings

    from marker_ls_plugin.conf import get_config
    from marker_ls_plugin.ocr.images import load_task_image
    from marker_ls_plugin.ocr.types import ImageError

    try:
        image = load_task_image(task, image_key, max_pixels=get_config()["MAX_IMAGE_PIXELS"])
    except ImageError as exc:
        for region in regions:
            writer.skip(task.pk, annotation.pk, region.id, str(exc))
        return
    data = task.data or {}
    url = data.get(image_key) or data.get(getattr(settings, "DATA_UNDEFINED_NAME", "$undefined$"))
    for region in regions:
        try:
            plan = plan_crop(region.value, image.size, padding)
        except SkippedRegion as exc:
            writer.skip(task.pk, annotation.pk, region.id, str(exc))
            continue
        writer.add(task.pk, annotation.pk, region, str(url), image, plan)


class _Writer:
    """Writes crops and jsonl lines as they come, keeping only counts and one digest per line."""

    def __init__(self, root: Path, seed: int, val_fraction: float):
        self.root, self.seed, self.val_fraction = root, seed, val_fraction
        (root / "images").mkdir(parents=True, exist_ok=True)
        self.files = {split: open(root / f".{split}.jsonl.tmp", "wb") for split in ("train", "val")}  # noqa: SIM115
        self.split_counts: Counter[str] = Counter()
        self.label_counts: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
        self.skipped: list[dict[str, Any]] = []
        self.skip_counts: Counter[str] = Counter()
        self.digests: list[bytes] = []
        self.crops: set[str] = set()

    @property
    def lines(self) -> int:
        return len(self.digests)

    def skip(self, task: int, annotation: int, region: str, reason: str) -> None:
        self.skipped.append({"task": task, "annotation": annotation, "region": region, "reason": reason})
        self.skip_counts[reason] += 1

    def add(self, task: int, annotation: int, region: Region, url: str, image: Any, plan: CropPlan) -> None:
        name = hashlib.sha256(json.dumps([CROP_VERSION, url, list(image.size), plan.key()]).encode()).hexdigest()
        name = name[:24] + ".png"
        crop_digest = self._crop(name, image, plan)
        split = split_of(f"{task}:{region.id}", self.seed, self.val_fraction)
        record = {"image": f"images/{name}", "text": region.text, "label": region.label, "task": task,
                  "annotation": annotation, "region": region.id, "source_image": url, "bbox": list(plan.bbox),
                  "rotation": round(plan.rotation, 4)}
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"
        self.files[split].write(line)
        self.digests.append(hashlib.sha256(line + b"\0" + crop_digest).digest())
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
        return hashlib.sha256(b"".join(sorted(self.digests))).hexdigest()

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


def _versions() -> dict[str, str]:
    import label_studio

    from marker_ls_plugin import __version__

    return {"label_studio": label_studio.__version__, "marker_ls_plugin": __version__}


def load_hf_dataset(output_dir: str):
    """The export as a Hugging Face ``DatasetDict`` ("train", "validation") with ``image`` and ``text`` columns.

    Needs the optional ``datasets`` package. Images are decoded lazily from the crop files.
    """
    import datasets

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
