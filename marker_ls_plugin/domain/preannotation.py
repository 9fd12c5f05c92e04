"""Pre-annotation scheduling: which tasks of a project get queued for OCR, and when; never OCR in a request.

Every import path ends in ``on_tasks_created``, which asks for the project's drain job
(``jobs.preannotate_pending``): when it starts it reads the project's pending tasks and predicts them in batches of
``PREANNOTATE_BATCH_SIZE``, so 50 one-page imports make a few engine batches, not 50 jobs of one page. At most one
drain job per project waits in the queue (``_Drains``). The sweep queues what is still missing (at start, after a
model change) and ``requeue`` is the Data Manager action: both queue explicit task ids (``jobs.preannotate``).
Both jobs run ``predictions.preannotate_tasks``; ``pending_tasks`` and ``predicted_since_changed`` say what it skips.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from django.db import transaction
from django.db.models import F
from projects.models import Project
from tasks.models import Task

from marker_ls_plugin.conf import get_config, positive_int, queue_backend
from marker_ls_plugin.domain.projects import model_choice, record_engine_error, should_preannotate
from marker_ls_plugin.domain.queues import QueueUnavailable, enqueue, job_id_for, job_status
from marker_ls_plugin.models import TaskOCR

logger = logging.getLogger(__name__)

PREANNOTATE_JOB = "marker_ls_plugin.jobs.preannotate"
DRAIN_JOB = "marker_ls_plugin.jobs.preannotate_pending"


class _Drains:
    """The drain job of each project that waits in the queue (queued, not started), as this process knows it.

    Embedded executor: the project is marked when its job is submitted and unmarked by the job as it starts,
    before it reads the pending tasks. RQ: the id of the job this process queued last, waiting while RQ says
    "queued" (RQ marks a job started before it runs it). A commit that finds its project's job waiting queues
    nothing: the job has not read the pending tasks yet, so it will find the new ones. One that finds the job
    started (maybe finishing its last query) or none queues a new one. Each job gets a fresh id: a job queued
    again under the id of a running one would be overwritten (and expired) by that one's end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[int] = set()  # embedded: projects whose drain job was submitted and has not started
        self._rq_jobs: dict[int, str] = {}  # RQ: project -> id of the drain job this process queued last

    def request(self, project: Project, queue: str, timeout: int) -> None:
        """Make sure a drain job of ``project`` will start after now (raises QueueUnavailable).

        The lock is held while queueing: a job's start waits for its mark, two commits never both queue one.
        """
        with self._lock:
            if queue_backend() != "rq":
                if project.pk not in self._waiting:
                    enqueue(DRAIN_JOB, project.pk, queue=queue, job_id=job_id_for("ocr"), timeout=timeout)
                    self._waiting.add(project.pk)
                return
            queued = self._rq_jobs.pop(project.pk, None)  # a status Redis cannot give leaves none: enqueue next
            if queued is not None and job_status(queued, queue) == "queued":
                self._rq_jobs[project.pk] = queued
                return
            job_id = job_id_for(f"drain-{project.pk}")
            enqueue(DRAIN_JOB, project.pk, queue=queue, job_id=job_id, timeout=timeout)
            self._rq_jobs[project.pk] = job_id

    def started(self, project_pk: int) -> None:
        """Called by the drain job before it reads the pending tasks: commits from now on queue another."""
        with self._lock:
            self._waiting.discard(project_pk)


_drains = _Drains()


def schedule(project: Project, task_ids: list[int], *, force: bool = False, drain: bool = False) -> int:
    """Queue pre-annotation of ``task_ids`` in batches, after the current transaction commits.

    ``drain``: the tasks are new and committed; instead of jobs of their own, the project's drain job is asked for
    (it reads every pending task of the project when it starts). Returns how many tasks are now covered by a job.
    """
    task_ids = sorted(set(task_ids))
    if not task_ids:
        return 0
    size = get_config()["PREANNOTATE_BATCH_SIZE"]
    queue = get_config()["INFERENCE_QUEUE"]
    timeout = positive_int("INFERENCE_TIMEOUT")
    if drain and transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: schedule(project, task_ids, drain=True))  # the job must see the tasks
        return len(task_ids)
    if drain:
        try:
            _drains.request(project, queue, timeout)
        except QueueUnavailable as exc:
            logger.error("pre-annotation of project %s could not be queued: %s", project.pk, exc)
            record_engine_error(project, f"pre-annotation could not be queued: {exc}")
            return 0
        return len(task_ids)
    for start in range(0, len(task_ids), size):
        batch = task_ids[start:start + size]
        try:
            enqueue(PREANNOTATE_JOB, project.pk, batch, force, queue=queue, job_id=job_id_for("ocr"), timeout=timeout)
        except QueueUnavailable as exc:
            logger.error("pre-annotation of project %s could not be queued: %s", project.pk, exc)
            record_engine_error(project, f"pre-annotation could not be queued: {exc}")
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
    """Called by every import path; once the new tasks commit, asks for the project's drain job when it
    pre-annotates."""
    if task_ids and should_preannotate(project):
        transaction.on_commit(lambda: schedule(project, task_ids, drain=True))


def drain_started(project_pk: int) -> None:
    """The drain job of ``project_pk`` starts: tasks committed after this queue another (call before reading)."""
    _drains.started(project_pk)


def pending_batches(project_pk: int) -> Iterator[list[int]]:
    """The drain job's work: ids of the project's pending unannotated tasks, ``PREANNOTATE_BATCH_SIZE`` at a time.

    Marks the drain started before the first read. Each batch is read after the previous one was predicted, past
    the last id given (tasks committed meanwhile join; a task is given once, also when an engine that cannot load
    leaves it pending). A batch starts only while twice the slowest one so far fits in ``INFERENCE_TIMEOUT``; past that,
    another drain job is queued for the rest.
    """
    drain_started(project_pk)
    project = Project.objects.filter(pk=project_pk).first()
    size = get_config()["PREANNOTATE_BATCH_SIZE"]
    timeout = positive_int("INFERENCE_TIMEOUT")
    began, slowest = time.monotonic(), 0.0
    last = 0  # the highest id given
    while project is not None and should_preannotate(project):
        version = model_choice(project).version
        ids = list(pending_tasks(project, version, unannotated_only=True).filter(id__gt=last)
                   .order_by("id").values_list("id", flat=True)[:size])
        if not ids:
            return
        if last and time.monotonic() - began + 2 * slowest > timeout:
            schedule(project, ids, drain=True)
            return
        last = ids[-1]
        batch_began = time.monotonic()
        yield ids
        slowest = max(slowest, time.monotonic() - batch_began)


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
