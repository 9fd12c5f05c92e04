"""Pre-annotation: imported tasks in, Label Studio predictions out; batched, never in a request."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F
from projects.models import Project
from tasks.models import Prediction, Task

from marker_ls_plugin.conf import get_config, positive_int
from marker_ls_plugin.domain.queues import QueueUnavailable, enqueue, job_id_for
from marker_ls_plugin.ml.protocol import base_version
from marker_ls_plugin.models import OCRModel, ProjectConfig, TaskOCR
from marker_ls_plugin.ocr.labeling import OCRControls, controls_from_config
from marker_ls_plugin.ocr.types import EngineUnavailable, ImageError

logger = logging.getLogger(__name__)

PREANNOTATE_JOB = "marker_ls_plugin.jobs.preannotate"


@dataclass(frozen=True)
class ModelChoice:
    """Which engine and checkpoints pre-annotate a project, the model_version they write, and why this one.

    ``automatic``: the engine is the "auto" engine's decision for this process (availability.auto_engine).
    """

    version: str
    engine: str
    options: dict[str, Any] = field(default_factory=dict)
    automatic: bool = False
    reason: str = ""


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


def model_choice(project: Project) -> ModelChoice:
    """The project's active registry model, else its (or the site's) engine with default checkpoints.

    The engine "auto" is resolved here: predictions carry the version of the engine it stands for.
    """
    from marker_ls_plugin.ocr.availability import auto_engine

    config = project_config(project)
    model = config.active_model
    if model is not None:
        return ModelChoice(model.name, model.engine, engine_options(model.engine, model_checkpoint(model)),
                           reason=f"the registry model {model.name} is active for this project")
    if config.engine:
        engine, automatic, reason = config.engine, False, "chosen for this project"
    else:
        engine, automatic = get_config()["ENGINE"], False
        reason = f"the site's engine (MARKER_LS_ENGINE={engine})"
        if engine == "auto":
            (engine, reason), automatic = auto_engine(), True
    return ModelChoice(base_version(engine), engine, engine_options(engine), automatic=automatic, reason=reason)


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
    from marker_ls_plugin.domain import runs

    model_changes = project_config(project).active_model_id != (model.pk if model else None)
    config = runs.activate_model(project, model)
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
    from marker_ls_plugin.ocr.engines import drop_engine

    if ProjectConfig.objects.filter(active_model=model).exists():
        return False
    return drop_engine(model.engine, **engine_options(model.engine, model_checkpoint(model)))


ML_BACKEND_TITLE = "Marker OCR"


def connect_ml_backend(project: Project):
    """Give an OCR-shaped project the in-process ML backend (once); return it or None."""
    from ml.models import MLBackend, MLBackendState

    from marker_ls_plugin.ml.connector import in_process_url, is_in_process

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


def should_preannotate(project: Project) -> bool:
    return (
        get_config()["PREANNOTATE_ON_IMPORT"]
        and project_config(project).preannotate
        and project_controls(project) is not None
    )


def schedule(project: Project, task_ids: list[int], *, force: bool = False) -> int:
    """Queue pre-annotation of ``task_ids`` in batches, after the current transaction commits."""
    task_ids = sorted(set(task_ids))
    if not task_ids:
        return 0
    size = get_config()["PREANNOTATE_BATCH_SIZE"]
    queue = get_config()["INFERENCE_QUEUE"]
    timeout = positive_int("INFERENCE_TIMEOUT")
    for start in range(0, len(task_ids), size):
        batch = task_ids[start:start + size]
        try:
            enqueue(PREANNOTATE_JOB, project.pk, batch, force, queue=queue, job_id=job_id_for("ocr"), timeout=timeout)
        except QueueUnavailable as exc:
            logger.error("pre-annotation of project %s could not be queued: %s", project.pk, exc)
            _record_project_error(project, f"pre-annotation could not be queued: {exc}")
            return start
    return len(task_ids)


def requeue(project: Project, task_ids: list[int]) -> tuple[int, int, str]:
    """Queue ``task_ids`` again with the project's current model (the Data Manager action).

    Tasks whose prediction by that model is newer than their last change are left out: a new one would repeat
    it. Returns (queued, left out, model_version).
    """
    version = model_choice(project).version
    tasks = Task.objects.filter(project=project, id__in=task_ids)
    unchanged = set(predicted_since_changed(tasks, version).values_list("id", flat=True))
    return schedule(project, [pk for pk in task_ids if pk not in unchanged], force=True), len(unchanged), version


def predicted_since_changed(tasks, version: str):
    """Those of ``tasks`` whose prediction of ``version`` was stored after the task last changed.

    Label Studio moves ``Task.updated_at`` whenever the task is saved: data edits, annotations, predictions (just
    before the prediction's row is written, so a fresh prediction counts as newer).
    """
    return tasks.filter(predictions__model_version=version, predictions__created_at__gte=F("updated_at")).distinct()


def on_tasks_created(project: Project, task_ids: list[int]) -> None:
    """Called by every import path; queues the new tasks when the project pre-annotates."""
    if task_ids and should_preannotate(project):
        transaction.on_commit(lambda: schedule(project, task_ids))


def pending_tasks(project: Project, version: str, *, unannotated_only: bool = False):
    """Tasks with no prediction of ``version`` and no recorded failure for it."""
    tasks = (
        Task.objects.filter(project=project)
        .exclude(predictions__model_version=version)
        .exclude(marker_ls_ocr__model_version=version, marker_ls_ocr__status=TaskOCR.Status.ERROR)
    )
    if unannotated_only:
        tasks = tasks.exclude(annotations__was_cancelled=False)
    return tasks


def sweep(project: Project | None = None) -> int:
    """Queue every task nobody annotated that still lacks a prediction from its project's current model.

    Annotated tasks are left out: the queued job would skip them anyway (jobs.preannotate).
    """
    projects = [project] if project is not None else Project.objects.all()
    queued = 0
    for item in projects:
        if should_preannotate(item):
            version = model_choice(item).version
            ids = list(pending_tasks(item, version, unannotated_only=True).values_list("id", flat=True))
            queued += schedule(item, ids)
    return queued


_project_locks: dict[int, threading.Lock] = {}
_project_locks_guard = threading.Lock()


def _project_lock(project_id: int) -> threading.Lock:
    """One pre-annotation at a time per project in this process (queue thread and web requests)."""
    with _project_locks_guard:
        return _project_locks.setdefault(project_id, threading.Lock())


def preannotate_tasks(project_id: int, task_ids: list[int], force: bool = False, *,
                      unannotated_only: bool = False) -> dict[str, int]:
    """Predict ``task_ids`` with the project's model and store Label Studio predictions.

    Without ``force`` a task already predicted by the current model is skipped, also when another
    job or Label Studio's own connector got there first (a per-project lock here, and a row lock on
    the task where the database has them); with ``unannotated_only`` so is a task someone annotated.
    """
    with _project_lock(project_id):
        return _preannotate_tasks(project_id, task_ids, force, unannotated_only)


def _preannotate_tasks(project_id: int, task_ids: list[int], force: bool,
                       unannotated_only: bool = False) -> dict[str, int]:
    from marker_ls_plugin.ocr.engines import get_engine
    from marker_ls_plugin.ocr.memory import return_freed_memory

    summary = {"predicted": 0, "failed": 0, "skipped": 0}
    project = Project.objects.filter(pk=project_id).first()
    controls = project and project_controls(project)
    if controls is None:
        return summary
    choice = model_choice(project)
    tasks = Task.objects.filter(project=project, id__in=task_ids).order_by("id")
    if force:  # all but those whose prediction of this version is newer than their last change
        tasks = tasks.exclude(id__in=predicted_since_changed(tasks, choice.version).values("id"))
    else:  # done, or failed for a reason that retrying will not fix (forcing retries it)
        tasks = (pending_tasks(project, choice.version, unannotated_only=unannotated_only)
                 .filter(id__in=task_ids).order_by("id"))
    tasks = list(tasks)
    summary["skipped"] = len(set(task_ids)) - len(tasks)
    if not tasks:
        return summary
    try:
        engine = get_engine(choice.engine, **choice.options)
    except EngineUnavailable as exc:
        logger.error("project %s: OCR engine %s unavailable: %s", project.pk, choice.engine, exc)
        _record_project_error(project, f"OCR engine '{choice.engine}' is unavailable: {exc}")
        summary["failed"] = len(tasks)
        return summary

    recognized = False
    group_pixels = GROUP_PIXELS if engine.batches_pages else 1  # else one page a call, its memory back after each
    for group in _page_groups(tasks, controls.image_key, engine.max_page_side, group_pixels, choice.version,
                              summary):
        recognized |= _recognize_group(engine, group, project, controls, choice.version, force, summary)
        group.clear()  # its pages go before the next one is decoded
        return_freed_memory()  # and what the engine took for them goes back to the system
    if not recognized:
        return summary
    # Label Studio shows annotators only the predictions of project.model_version.
    Project.objects.filter(pk=project.pk).exclude(model_version=choice.version).update(model_version=choice.version)
    ProjectConfig.objects.filter(project=project).exclude(engine_error="").update(engine_error="")
    return summary


# Pixels of shrunk pages one engine call takes when the engine batches pages (about 67 MB as Pillow RGB): pages
# are decoded one at a time and read in groups up to this, so a batch holds one full-size decoded image at most.
GROUP_PIXELS = 4 * 2048 * 2048


def _page_groups(tasks: list[Task], image_key: str, max_side: int | None, group_pixels: int, version: str,
                 summary: dict[str, int]) -> Iterator[list[tuple[Task, Any, tuple[int, int]]]]:
    """(task, page shrunk to ``max_side``, full size) in groups of at most ``group_pixels`` (or one page).

    Tasks whose image cannot be read are recorded and left out.
    """
    from marker_ls_plugin.ocr.images import load_task_page

    group: list[tuple[Task, Any, tuple[int, int]]] = []
    pixels = 0
    for task in tasks:
        try:
            image, size = load_task_page(task, image_key, max_pixels=get_config()["MAX_IMAGE_PIXELS"],
                                         max_side=max_side)
        except ImageError as exc:
            _record_task(task, version, error=str(exc))
            summary["failed"] += 1
            continue
        if group and pixels + image.width * image.height > group_pixels:
            yield group
            group, pixels = [], 0
        group.append((task, image, size))
        pixels += image.width * image.height
    if group:
        yield group


def _recognize_group(engine, group: list[tuple[Task, Any, tuple[int, int]]], project: Project,
                     controls: OCRControls, version: str, force: bool, summary: dict[str, int]) -> bool:
    """OCR one group and store its predictions; False when the engine failed (each task then says why)."""
    from marker_ls_plugin.ocr.engines import rescale_page

    try:
        pages = engine.recognize_pages([image for _, image, _ in group])
    except Exception as exc:  # one bad page must not stop the queue
        logger.exception("project %s: OCR failed on tasks %s", project.pk, [task.pk for task, _, _ in group])
        for task, _, _ in group:
            _record_task(task, version, error=f"OCR failed: {type(exc).__name__}: {exc}")
        summary["failed"] += len(group)
        return False
    for (task, _, size), page in zip(group, pages, strict=True):
        _store_prediction(task, project, rescale_page(page, *size), controls, version, force, summary)
    return True


def _store_prediction(task: Task, project: Project, page, controls: OCRControls, version: str, force: bool,
                      summary: dict[str, int]) -> None:
    from marker_ls_plugin.ocr.results import page_to_results, prediction_score

    with transaction.atomic():
        list(Task.objects.select_for_update().filter(pk=task.pk))  # a worker elsewhere waits here
        stored = Prediction.objects.filter(task=task, model_version=version)
        current = Task.objects.filter(pk=task.pk)
        if stored.exists() and (not force or predicted_since_changed(current, version).exists()):
            summary["skipped"] += 1  # forced: another job predicted the task as it is now
            return
        stored.delete()  # forced: the task changed since; its new prediction replaces the old one
        Prediction.objects.create(
            task=task, project=project, result=page_to_results(page, controls),
            score=prediction_score(page.lines), model_version=version,
        )
        _record_task(task, version, lines=len(page.lines))
    summary["predicted"] += 1


def _record_task(task: Task, version: str, *, error: str = "", lines: int = 0) -> None:
    status = TaskOCR.Status.ERROR if error else TaskOCR.Status.DONE
    TaskOCR.objects.update_or_create(
        task=task, defaults={"model_version": version, "status": status, "error": error, "lines": lines}
    )
    if error:
        logger.warning("task %s: %s", task.pk, error)


def _record_project_error(project: Project, message: str) -> None:
    ProjectConfig.objects.update_or_create(project=project, defaults={"engine_error": message})
