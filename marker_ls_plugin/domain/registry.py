"""The registry's disk side: recognition checkpoints under ``<MODELS_DIR>/recognition/``.

Directories are validated without loading weights (file names, ``config.json`` and the safetensors
headers), so a scan is cheap enough to run at every worker start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.text import slugify
from safetensors import SafetensorError, safe_open

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.projects import model_checkpoint
from marker_ls_plugin.models import FineTuneRun, OCRModel
from marker_ls_plugin.ocr.checkpoints import TOKENIZER_FILES
from marker_ls_plugin.training import model_dir
from marker_ls_plugin.training.model_dir import ModelMetadata

logger = logging.getLogger(__name__)

RECOGNITION_MODEL_TYPE = "surya-multimodal-foundation"  # surya-ocr 0.17.1's recognition (foundation) model


class InvalidCheckpoint(ValueError):
    """A directory that is not a usable surya recognition checkpoint; the message says why."""


@dataclass
class ScanEntry:
    path: Path
    status: str  # "registered", "known" or "broken"
    model: OCRModel | None = None
    reason: str = ""

    def line(self) -> str:
        if self.status == "broken":
            return f"broken      {self.path}: {self.reason}"
        label = "registered" if self.status == "registered" else "known"
        return f"{label:<11} {self.model.name} ({self.path})"


@dataclass
class ScanReport:
    directory: Path
    entries: list[ScanEntry] = field(default_factory=list)

    def _with(self, status: str) -> list[ScanEntry]:
        return [entry for entry in self.entries if entry.status == status]

    @property
    def registered(self) -> list[ScanEntry]:
        return self._with("registered")

    @property
    def known(self) -> list[ScanEntry]:
        return self._with("known")

    @property
    def broken(self) -> list[ScanEntry]:
        return self._with("broken")

    def summary(self) -> str:
        return (f"{self.directory}: {len(self.registered)} registered, {len(self.known)} already known, "
                f"{len(self.broken)} broken")


# Validation (no database)


def checkpoint_problems(path: Path) -> list[str]:
    """What keeps ``path`` from being a surya recognition checkpoint; empty when nothing does."""
    problems = _config_problems(path / "config.json")
    problems += _weights_problems(path)
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        problems.append(f"tokenizer file(s) missing: {', '.join(missing)}")
    return problems


def _config_problems(config_path: Path) -> list[str]:
    if not config_path.is_file():
        return ["config.json is missing"]
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"config.json is not readable JSON: {exc}"]
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != RECOGNITION_MODEL_TYPE:
        return [f"config.json has model_type {model_type!r}, not {RECOGNITION_MODEL_TYPE!r} "
                "(not a surya recognition checkpoint)"]
    return []


def _weights_problems(path: Path) -> list[str]:
    shards = sorted(path.glob("*.safetensors"))
    if not shards and not (path / "pytorch_model.bin").is_file():
        return ["no weights: neither *.safetensors nor pytorch_model.bin"]
    problems = [f"{shard.name} is unreadable: {reason}" for shard in shards if (reason := _safetensors_problem(shard))]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return [*problems, f"{index.name} is not a safetensors index: {exc}"]
        missing = sorted(name for name in names if not (path / name).is_file())
        if missing:
            problems.append(f"shard(s) listed in {index.name} missing: {', '.join(missing)}")
    return problems


def _safetensors_problem(shard: Path) -> str:
    try:
        with safe_open(str(shard), framework="numpy") as handle:  # reads the header only; numpy: no torch
            if not list(handle.keys()):
                return "it holds no tensors"
    except (SafetensorError, OSError) as exc:
        return str(exc)
    return ""


def read_metadata(path: Path) -> ModelMetadata | None:
    """The directory's ``marker_ls_model.json`` (training/model_dir.py); None when absent; InvalidCheckpoint when
    malformed."""
    try:
        return model_dir.read_metadata(path)
    except model_dir.InvalidMetadata as exc:
        raise InvalidCheckpoint(str(exc)) from exc


# Registration


def scan_models_dir(models_dir: str | os.PathLike | None = None) -> ScanReport:
    """Register every valid checkpoint directory under ``<models_dir>/recognition/`` not yet registered.

    Hidden directories are skipped: the training job writes ``.tmp-*`` there before renaming.
    """
    root = models_dir or get_config()["MODELS_DIR"]
    report = ScanReport(model_dir.recognition_dir(root))
    for path in model_dir.model_directories(root):
        try:
            model, created = register_model_dir(path)
        except InvalidCheckpoint as exc:
            logger.warning("model directory %s is broken: %s", path, exc)
            report.entries.append(ScanEntry(path, "broken", reason=str(exc)))
            continue
        report.entries.append(ScanEntry(path, "registered" if created else "known", model))
    return report


def register_model_dir(path: str | os.PathLike, *, created_by=None, organization=None) -> tuple[OCRModel, bool]:
    """The registry row of checkpoint directory ``path``, created when there is none: ``(model, created)``.

    A new row belongs to ``organization``, else to the organization of the project whose run wrote the
    directory (its ``marker_ls_model.json``), else to nobody: instance-wide, as models an administrator brings.
    Raises InvalidCheckpoint (nothing is written) when the directory is not a recognition checkpoint.
    """
    path = Path(os.path.abspath(path))
    problems = checkpoint_problems(path)
    if problems:
        raise InvalidCheckpoint("; ".join(problems))
    metadata = read_metadata(path)
    run_id = metadata.run if metadata is not None else None
    if run_id is not None:
        status = FineTuneRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if status in (FineTuneRun.Status.FAILED, FineTuneRun.Status.CANCELLED):
            raise InvalidCheckpoint(f"written by run {run_id}, which {status} before registering it; delete the "
                                    f"directory, or remove its marker_ls_model.json to register it as a base model")
    for _attempt in range(5):
        existing = find_registered(path, metadata)
        if existing:
            return existing, False
        try:
            with transaction.atomic():
                fields = _model_fields(path, metadata)
                if organization is not None:
                    fields["organization_id"] = getattr(organization, "pk", organization)
                model = OCRModel.objects.create(created_by=created_by, **fields)
        except IntegrityError:  # a concurrent scan or the training job registered it, or took the name
            continue
        logger.info("registered model %s from %s", model.name, path)
        return model, True
    raise InvalidCheckpoint("could not register it: its name kept being taken")


def find_registered(path: Path, metadata: ModelMetadata | None = None) -> OCRModel | None:
    """The model already registered for ``path`` (same directory, or the run that produced it)."""
    run_id = metadata.run if metadata is not None else None
    if run_id is not None:
        model = OCRModel.objects.filter(produced_by_run_id=run_id).first()
        if model:
            return model
    target = os.path.realpath(path)
    for model in OCRModel.objects.filter(engine=OCRModel.Engine.SURYA).order_by("pk"):
        checkpoint = model_checkpoint(model)
        if checkpoint and os.path.isabs(checkpoint) and os.path.realpath(checkpoint) == target:
            return model
    return None


def _model_fields(path: Path, metadata: ModelMetadata | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "engine": OCRModel.Engine.SURYA, "checkpoint": str(path), "kind": OCRModel.Kind.BASE,
        "name": unique_name(path.name),
    }
    if metadata is None:
        return fields
    run_id = metadata.run
    run = FineTuneRun.objects.filter(pk=run_id).select_related("project").first() if run_id is not None else None
    organization_id = run.project.organization_id if run else None
    fields.update(
        kind=OCRModel.Kind.FINETUNED,
        name=unique_name(metadata.name or path.name),
        # A parent the run's organization cannot see is not recorded: its name would tell the other's models.
        parent=(OCRModel.objects.visible_to(organization_id).filter(name=metadata.parent).first()
                if metadata.parent else None),
        produced_by_run=run,
        organization_id=organization_id,
        dataset_sha256=metadata.dataset_sha256,
        metrics=metadata.metrics,
        description=metadata.description,
    )
    return fields


def unique_name(wanted: str) -> str:
    """A registry name from ``wanted``: slugified, with ``-2``, ``-3``... when already taken."""
    base = slugify(wanted)[:90].strip("-_") or "model"
    taken = set(OCRModel.objects.filter(name__startswith=base).values_list("name", flat=True))
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}-{number}"
    return name
