"""Before a run is recorded: what keeps the built-in fine-tune from training a project, in the user's words.

A run that cannot train never starts (runs.start_run raises RunRefused with these problems). Reads no image.
"""

from __future__ import annotations

import math
from typing import Any

from django.urls import reverse

from marker_ls_plugin.conf import DEFAULTS, get_config
from marker_ls_plugin.dataset.export import count_lines
from marker_ls_plugin.domain.engines import resolve_surya_checkpoint
from marker_ls_plugin.domain.projects import model_checkpoint, model_choice, project_config
from marker_ls_plugin.models import OCRModel
from marker_ls_plugin.ocr.types import EngineUnavailable
from marker_ls_plugin.training.config import TrainingArguments

FINETUNE = DEFAULTS["RUN_FUNCTION"]  # the built-in fine-tune, whose needs training_problems checks


def training_problems(project, base_model: OCRModel | None = None,
                      config: dict[str, Any] | None = None) -> list[str]:
    """What keeps the built-in fine-tune from training ``project`` now, in the user's words; empty when nothing.

    A trainable engine (a surya model to start from), weights that load, and enough annotated lines in each
    split (counted as the run's export will split them, reading no image). Checked before a run is recorded,
    so that a run that cannot train never starts. A custom RUN_FUNCTION has needs of its own: nothing is checked.
    """
    settings = get_config()
    if settings["RUN_FUNCTION"] != FINETUNE:
        return []
    arguments = TrainingArguments.from_dict(config)
    problems = _model_problems(project, base_model)
    counts = count_lines(project.pk, labels=arguments.labels, val_fraction=arguments.val_fraction,
                         seed=arguments.split_seed)
    for split, key, name in (("train", "MIN_TRAIN_LINES", "training"), ("val", "MIN_VAL_LINES", "validation")):
        missing = settings[key] - counts[split]
        if missing > 0:
            problems.append(
                f"the {name} split has {counts[split]} annotated lines and a run needs {settings[key]}; new lines go "
                f"to it about {_share(split, arguments.val_fraction):.0%} of the time, so annotate about "
                f"{_more_lines(missing, split, arguments.val_fraction)} more lines (each line is a region with its "
                f"transcription), or lower MARKER_LS_{key}"
            )
    return problems


def _model_problems(project, base_model: OCRModel | None) -> list[str]:
    page = reverse("marker_ls_plugin:project", kwargs={"project_pk": project.pk})
    switch = f"switch the project to a surya model on its OCR page {page}"
    model = base_model or project_config(project).active_model
    if model is not None and model.engine != OCRModel.Engine.SURYA:
        return [f"{model.name} is a {model.engine} model and only surya models can be fine-tuned: {switch}"]
    engine = model.engine if model is not None else model_choice(project).engine
    if engine != OCRModel.Engine.SURYA:
        return [f"the project reads with {engine}, which cannot be fine-tuned: {switch} (or set MARKER_LS_ENGINE="
                f"surya for projects that choose no engine)"]
    checkpoint = model_checkpoint(model) if model is not None else None
    try:
        # Nothing is downloaded in a request: the worker fetches a default whose host answers.
        resolve_surya_checkpoint(checkpoint or get_config()["SURYA_RECOGNITION_CHECKPOINT"], download=False)
    except EngineUnavailable as exc:
        return [f"the surya weights to start from cannot be loaded: {exc}"]
    return []


def _share(split: str, val_fraction: float) -> float:
    return val_fraction if split == "val" else 1 - val_fraction


def _more_lines(missing: int, split: str, val_fraction: float) -> int:
    """About how many new lines give ``missing`` more in ``split``: new lines land in it with its share."""
    share = _share(split, val_fraction)
    return missing if share <= 0 else math.ceil(missing / share)
