"""A project's OCR settings: its plugin row, its labeling controls, the model that reads it, its ML backend row.

Reads only, except ``connect_ml_backend`` (the Model tab's "Marker OCR" row) and ``record_engine_error``.
Choosing another engine or model is ``activation.py``; queuing pages is ``preannotation.py``.
"""

from __future__ import annotations

import os
from typing import Any

from ml.models import MLBackend, MLBackendState
from projects.models import Project

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.engines import auto_engine
from marker_ls_plugin.ml.address import in_process_url, is_in_process
from marker_ls_plugin.ml.predictor import Predictor, base_version
from marker_ls_plugin.models import OCRModel, ProjectConfig
from marker_ls_plugin.ocr.labeling import OCRControls, controls_from_config

ML_BACKEND_TITLE = "Marker OCR"


def project_config(project: Project) -> ProjectConfig:
    """The project's plugin settings; the defaults, unsaved, when it has none yet (reads never write)."""
    return ProjectConfig.objects.filter(project=project).select_related("active_model").first() or \
        ProjectConfig(project=project)


def project_controls(project: Project) -> OCRControls | None:
    """The OCR controls of the project's labeling config; None when it is not OCR-shaped."""
    try:
        return controls_from_config(project.label_config)
    except ValueError:
        return None


def should_preannotate(project: Project) -> bool:
    return (
        get_config()["PREANNOTATE_ON_IMPORT"]
        and project_config(project).preannotate
        and project_controls(project) is not None
    )


def engine_options(engine: str, recognition_checkpoint: str | None = None) -> dict[str, Any]:
    config = get_config()
    if engine != "surya":
        return {}
    return {
        "recognition_checkpoint": recognition_checkpoint or config["SURYA_RECOGNITION_CHECKPOINT"],
        "detection_checkpoint": config["SURYA_DETECTION_CHECKPOINT"],
        "device": config["TORCH_DEVICE"],
    }


def model_checkpoint(model: OCRModel) -> str | None:
    """A registry model's checkpoint; fine-tuned ones default to ``<MODELS_DIR>/recognition/<name>/``."""
    if model.checkpoint:
        return model.checkpoint
    if model.kind == OCRModel.Kind.FINETUNED:
        return os.path.join(get_config()["MODELS_DIR"], "recognition", model.name)
    return None


def model_choice(project: Project) -> Predictor:
    """The project's active registry model, else its (or the site's) engine with default checkpoints.

    The engine "auto" is resolved here: predictions carry the version of the engine it stands for.
    """
    config = project_config(project)
    model = config.active_model
    if model is not None:
        return Predictor(model.name, model.engine, engine_options(model.engine, model_checkpoint(model)),
                         reason=f"the registry model {model.name} is active for this project")
    if config.engine:
        engine, automatic, reason = config.engine, False, "chosen for this project"
    else:
        engine, automatic = get_config()["ENGINE"], False
        reason = f"the site's engine (MARKER_LS_ENGINE={engine})"
        if engine == "auto":
            (engine, reason), automatic = auto_engine(), True
    return Predictor(base_version(engine), engine, engine_options(engine), automatic=automatic, reason=reason)


def check_model_choice(project: Project, model: OCRModel | None) -> None:
    """Refuse a model ``project``'s organization may not use, in the words used for one that does not exist."""
    if model is not None and not OCRModel.objects.for_project(project).filter(pk=model.pk).exists():
        raise ValueError(f"model {model.pk} does not exist")


def record_engine_error(project: Project, message: str) -> None:
    """What keeps the project's pages from being read (its OCR page shows it until a page is read)."""
    ProjectConfig.objects.update_or_create(project=project, defaults={"engine_error": message})


def connect_ml_backend(project: Project) -> MLBackend | None:
    """Give an OCR-shaped project the in-process ML backend (once); return it or None."""
    if project_controls(project) is None:
        return None
    ProjectConfig.objects.get_or_create(project=project)  # its settings row, with its ML backend credential
    for backend in MLBackend.objects.filter(project=project):
        if is_in_process(backend.url):
            return backend
    return MLBackend.objects.create(
        project=project, url=in_process_url(), title=ML_BACKEND_TITLE, is_interactive=True,
        state=MLBackendState.CONNECTED, model_version=model_choice(project).version, auto_update=True,
    )
