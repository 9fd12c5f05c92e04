"""Which model reads a project: activating a registry model or choosing an engine, and freeing the old one.

The API, the admin, the OCR page and the training job all change a project's model through here. Once the change
commits, tasks nobody annotated that lack a prediction of the new version are queued (``preannotation.sweep``).
"""

from __future__ import annotations

import logging

from django.db import transaction
from projects.models import Project

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.engines import drop_engine
from marker_ls_plugin.domain.preannotation import sweep
from marker_ls_plugin.domain.projects import check_model_choice, engine_options, model_checkpoint, project_config
from marker_ls_plugin.models import OCRModel, ProjectConfig

logger = logging.getLogger(__name__)


def activate_model(project: Project, model: OCRModel | None) -> ProjectConfig:
    """Make ``model`` the one that pre-annotates ``project`` (None: back to the engine's default).

    With REPREDICT_ON_ACTIVATE, tasks nobody annotated yet that lack a prediction from the new model are queued
    once the change commits.
    """
    check_model_choice(project, model)
    config, _ = ProjectConfig.objects.get_or_create(project=project)
    if config.active_model_id != (model.pk if model else None):
        previous = config.active_model
        config.active_model = model
        config.save(update_fields=["active_model", "updated_at"])
        logger.info("project %s: active model is now %s", project.pk, model or "the engine default")
        if previous is not None:  # its engine stays loaded in this process only while some project uses it
            transaction.on_commit(lambda: release_model(previous), robust=True)
        if get_config()["REPREDICT_ON_ACTIVATE"]:
            transaction.on_commit(lambda: sweep(project), robust=True)
    return config


def choose_engine(project: Project, engine: str) -> ProjectConfig:
    """Pre-annotate ``project`` with ``engine`` ("auto": the site's engine) instead of any active model."""
    return _choose(project, None, engine="" if engine == "auto" else engine)


def choose_model(project: Project, model: OCRModel) -> ProjectConfig:
    """Pre-annotate ``project`` with the registry ``model``."""
    return _choose(project, model)


def _choose(project: Project, model: OCRModel | None, engine: str | None = None) -> ProjectConfig:
    """Activate ``model`` (None: the engine), set the project's ``engine`` unless None, forget the old engine error.

    Once the change commits, tasks nobody annotated that lack a prediction of the new version are queued, so
    pages imported while the previous engine could not load are predicted now.
    """
    model_changes = project_config(project).active_model_id != (model.pk if model else None)
    config = activate_model(project, model)
    wanted = {"engine_error": ""}  # the error was the previous engine's
    if engine is not None:
        wanted["engine"] = engine
    changed = [name for name, value in wanted.items() if getattr(config, name) != value]
    if changed:
        for name in changed:
            setattr(config, name, wanted[name])
        config.save(update_fields=[*changed, "updated_at"])
    if not (model_changes and get_config()["REPREDICT_ON_ACTIVATE"]):  # else activate_model queued this sweep
        transaction.on_commit(lambda: sweep(project), robust=True)
    return config


def release_model(model: OCRModel) -> bool:
    """Free this process's engine of ``model`` when no project has it active any more; True if one was freed."""
    if ProjectConfig.objects.filter(active_model=model).exists():
        return False
    return drop_engine(model.engine, **engine_options(model.engine, model_checkpoint(model)))
