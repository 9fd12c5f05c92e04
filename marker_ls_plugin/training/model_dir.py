"""A model directory: ``<models dir>/recognition/<name>/``, its metadata file, how it is saved and found.

One schema (``ModelMetadata``) for ``marker_ls_model.json``: written here by ``save`` (a fine-tune run's, and
``loop.train(output_dir=)``'s), read here by the registry and the standalone ML backend. One scanner of the
models directory (``model_directories``), used by both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_FILE = "marker_ls_model.json"
RECOGNITION = "recognition"  # <models dir>/recognition/<name>/: surya recognition checkpoints
MAX_SHA256 = 64


class InvalidMetadata(ValueError):
    """A ``marker_ls_model.json`` that cannot be read as ModelMetadata; the message says why."""


@dataclass
class ModelMetadata:
    """What a fine-tune writes next to the weights. Each field is optional; a file without any names no model.

    The registry makes a directory with this file a fine-tuned model (without it: a base model).
    """

    name: str = ""  # the registry name wanted (slugified, made unique); "": the directory's name
    parent: str | None = None  # the registry name of the model it was trained from
    run: int | None = None  # the fine-tune run that wrote it
    dataset_sha256: str = ""  # the exported dataset's content hash
    metrics: dict[str, Any] = field(default_factory=dict)  # {"before": ..., "after": ..., ...} (TrainResult)
    description: str = ""
    base: str = ""  # the checkpoint training started from
    arguments: dict[str, Any] = field(default_factory=dict)  # TrainingArguments.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelMetadata:
        """Check each known key's type (unknown keys, as older files have, are ignored); InvalidMetadata if bad."""
        if not isinstance(data, dict):
            raise InvalidMetadata(f"{METADATA_FILE} must hold a JSON object")
        for key, types in _TYPES.items():
            value = data.get(key)
            if key in data and (not isinstance(value, types) or isinstance(value, bool)):  # JSON true is no run id
                raise InvalidMetadata(f"{METADATA_FILE}: {key!r} has the wrong type ({type(value).__name__})")
        if len(data.get("dataset_sha256", "")) > MAX_SHA256:
            raise InvalidMetadata(f"{METADATA_FILE}: 'dataset_sha256' is longer than {MAX_SHA256} characters")
        return cls(**{key: data[key] for key in _TYPES if key in data})


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "parent": (str, type(None)), "run": (int, type(None)), "dataset_sha256": (str,),
    "metrics": (dict,), "description": (str,), "base": (str,), "arguments": (dict,),
}


def read_metadata(path: str | os.PathLike) -> ModelMetadata | None:
    """The directory's metadata; None when it has no metadata file; InvalidMetadata when the file is malformed."""
    metadata_path = Path(path) / METADATA_FILE
    if not metadata_path.is_file():
        return None
    try:
        data = json.loads(metadata_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidMetadata(f"{METADATA_FILE} is not readable JSON: {exc}") from exc
    return ModelMetadata.from_dict(data)


def model_name(path: str | os.PathLike) -> str:
    """The name a model directory goes by: its metadata's name, else (none, or unreadable) the directory's name."""
    try:
        metadata = read_metadata(path)
    except InvalidMetadata:
        metadata = None
    return metadata.name if metadata is not None and metadata.name else Path(path).name


def recognition_dir(models_dir: str | os.PathLike) -> Path:
    return Path(models_dir) / RECOGNITION


def model_directories(models_dir: str | os.PathLike) -> list[Path]:
    """The directories under ``<models_dir>/recognition/``, sorted; hidden ones (a save in progress) left out.

    Nothing is validated: the registry checks each one, the standalone backend takes those with a config.json.
    """
    directory = recognition_dir(models_dir)
    if not directory.is_dir():
        return []
    return [path for path in sorted(directory.iterdir()) if not path.name.startswith(".") and path.is_dir()]


def save(foundation: Any, output_dir: str | os.PathLike, metadata: ModelMetadata) -> Path:
    """Save model, tokenizer and ``marker_ls_model.json`` to ``output_dir`` atomically; returns the directory.

    Files go to a hidden sibling first and are renamed into place, so ``output_dir`` is either absent or complete
    (scanners skip hidden directories). The config is saved with the checkpoint's own multi_output_distance
    (heads kept, unchanged).
    """
    final = Path(output_dir)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        foundation.model.save_pretrained(str(tmp))
        foundation.processor.ocr_tokenizer.ocr_tokenizer.save_pretrained(str(tmp))
        (tmp / METADATA_FILE).write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True, default=str))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
