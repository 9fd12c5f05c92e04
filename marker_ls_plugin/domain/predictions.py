"""The pre-annotation job's body: read a project's pages, OCR them in groups, store Label Studio predictions.

Called by the queued job (``jobs.preannotate``) and by Label Studio's own requests through the in-process
connector (Retrieve Predictions, a task opened before its queued prediction was stored).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from projects.models import Project
from tasks.models import Prediction, Task

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.dataset.storage import load_task_page
from marker_ls_plugin.domain.engines import get_engine
from marker_ls_plugin.domain.preannotation import pending_tasks, predicted_since_changed
from marker_ls_plugin.domain.projects import model_choice, project_controls, record_engine_error
from marker_ls_plugin.models import ProjectConfig, TaskOCR
from marker_ls_plugin.ocr.base import rescale_page
from marker_ls_plugin.ocr.labeling import OCRControls
from marker_ls_plugin.ocr.memory import return_freed_memory
from marker_ls_plugin.ocr.results import page_to_results, prediction_score
from marker_ls_plugin.ocr.types import EngineUnavailable, ImageError, PageOCR

logger = logging.getLogger(__name__)

# Pixels of shrunk pages one engine call takes when the engine batches pages (about 67 MB as Pillow RGB): pages
# are decoded one at a time and read in groups up to this, so a batch holds one full-size decoded image at most.
GROUP_PIXELS = 4 * 2048 * 2048
# Pixels read between two returns of freed memory to the system: a small page leaves little to return, and each
# return (malloc_trim) walks the heap, so small pages are read a few at a time before it.
TRIM_PIXELS = 2 * 1024 * 1024

Group = list[tuple[Task, Any, tuple[int, int]]]  # (task, page shrunk for the engine, full upright size)

class _Claims:
    """The tasks threads of this process are reading now: each task is read by one, the others wait for it.

    A page opened in Label Studio while the queue reads others of its project is read at once, by the request,
    instead of after the whole queued batch; the queued job then finds it done.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[int, threading.Event] = {}

    def claim(self, task_id: int) -> threading.Event | None:
        """None when the caller now holds ``task_id``; else the event its holder sets when done with it."""
        with self._guard:
            if task_id in self._held:
                return self._held[task_id]
            self._held[task_id] = threading.Event()
            return None

    def release(self, task_id: int) -> None:
        with self._guard:
            event = self._held.pop(task_id, None)
        if event is not None:
            event.set()


_claims = _Claims()


def preannotate_tasks(project_id: int, task_ids: list[int], force: bool = False, *,
                      unannotated_only: bool = False) -> dict[str, int]:
    """Predict ``task_ids`` with the project's model and store Label Studio predictions; return when each has one
    (or its error).

    Without ``force`` a task already predicted by the current model is skipped, also when another
    job or Label Studio's own connector got there first (a claim on each task in this process, waited for
    by the others, and a row lock on the task where the database has them); with ``unannotated_only`` so is a task
    someone annotated.
    """
    summary = {"predicted": 0, "failed": 0, "skipped": 0}
    project = Project.objects.filter(pk=project_id).first()
    controls = project and project_controls(project)
    if controls is None:
        return summary
    choice = model_choice(project)
    tasks = _selected(project, choice.version, task_ids, force, unannotated_only)
    summary["skipped"] = len(set(task_ids)) - len(tasks)
    if not tasks:
        return summary
    try:
        engine = get_engine(choice.engine, **choice.options)
    except EngineUnavailable as exc:
        logger.error("project %s: OCR engine %s unavailable: %s", project.pk, choice.engine, exc)
        record_engine_error(project, f"OCR engine '{choice.engine}' is unavailable: {exc}")
        summary["failed"] = len(tasks)
        return summary

    recognized = False
    while tasks:
        held: dict[int, threading.Event] = {}  # tasks another thread is reading: after ours, as it left them
        recognized |= _read(engine, tasks, project, controls, choice.version, force, summary, held)
        for event in held.values():
            event.wait()
        tasks = _selected(project, choice.version, list(held), force, unannotated_only) if held else []
        summary["skipped"] += len(held) - len(tasks)
    if not recognized:
        return summary
    # Label Studio shows annotators only the predictions of project.model_version.
    Project.objects.filter(pk=project.pk).exclude(model_version=choice.version).update(model_version=choice.version)
    ProjectConfig.objects.filter(project=project).exclude(engine_error="").update(engine_error="")
    return summary


def _selected(project: Project, version: str, task_ids: list[int], force: bool, unannotated_only: bool) -> list[Task]:
    """Those of ``task_ids`` to read now, by id."""
    tasks = Task.objects.filter(project=project, id__in=task_ids).order_by("id")
    if force:  # all but those whose prediction of this version is newer than their last change
        return list(tasks.exclude(id__in=predicted_since_changed(tasks, version).values("id")))
    # done, or failed for a reason that retrying will not fix (forcing retries it)
    return list(pending_tasks(project, version, unannotated_only=unannotated_only).filter(id__in=task_ids)
                .order_by("id"))


def _read(engine, tasks: list[Task], project: Project, controls: OCRControls, version: str, force: bool,
          summary: dict[str, int], held: dict[int, threading.Event]) -> bool:
    """OCR the ``tasks`` no other thread holds, group by group; True when the engine read one group.

    The tasks another thread holds go to ``held``, with the event that says it is done with them.
    """
    recognized = False
    claimed: set[int] = set()  # by this call and not released yet
    group_pixels = GROUP_PIXELS if engine.batches_pages else 1  # else one page a call, its memory back after it
    untrimmed = 0  # pixels read since memory last went back
    try:
        for group in _page_groups(tasks, controls.image_key, engine.max_page_side, group_pixels, version, summary,
                                  claimed, held):
            recognized |= _recognize_group(engine, group, project, controls, version, force, summary)
            for task, _, _ in group:
                _release(task.pk, claimed)
            untrimmed += sum(image.width * image.height for _, image, _ in group)
            group.clear()  # its pages go before the next one is decoded
            if untrimmed >= TRIM_PIXELS:
                return_freed_memory()  # and what the engine took for them goes back to the system
                untrimmed = 0
    finally:
        for task_id in list(claimed):
            _release(task_id, claimed)
    if untrimmed:
        return_freed_memory()
    return recognized


def _release(task_id: int, claimed: set[int]) -> None:
    claimed.discard(task_id)
    _claims.release(task_id)


def _page_groups(tasks: list[Task], image_key: str, max_side: int | None, group_pixels: int, version: str,
                 summary: dict[str, int], claimed: set[int], held: dict[int, threading.Event]) -> Iterator[Group]:
    """(task, page shrunk to ``max_side``, full size) in groups of at most ``group_pixels`` (or one page).

    Each task is claimed before its page is read (into ``claimed``); one another thread holds goes to ``held``.
    Tasks whose image cannot be read are recorded and left out.
    """
    group: Group = []
    pixels = 0
    for task in tasks:
        holder = _claims.claim(task.pk)
        if holder is not None:
            held[task.pk] = holder
            continue
        claimed.add(task.pk)
        try:
            image, size = load_task_page(task, image_key, max_pixels=get_config()["MAX_IMAGE_PIXELS"],
                                         max_side=max_side)
        except ImageError as exc:
            _record_task(task, version, error=str(exc))
            summary["failed"] += 1
            _release(task.pk, claimed)
            continue
        if group and pixels + image.width * image.height > group_pixels:
            yield group
            group, pixels = [], 0
        group.append((task, image, size))
        pixels += image.width * image.height
    if group:
        yield group


def _recognize_group(engine, group: Group, project: Project, controls: OCRControls, version: str, force: bool,
                     summary: dict[str, int]) -> bool:
    """OCR one group and store its predictions; False when the engine failed (each task then says why)."""
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


def _store_prediction(task: Task, project: Project, page: PageOCR, controls: OCRControls, version: str,
                      force: bool, summary: dict[str, int]) -> None:
    with transaction.atomic():
        list(Task.objects.select_for_update().filter(pk=task.pk))  # a worker elsewhere waits here
        stored = Prediction.objects.filter(task=task, model_version=version)
        current = Task.objects.filter(pk=task.pk)
        if stored.exists():
            if not force or predicted_since_changed(current, version).exists():
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
