"""Fine-tune run operations: start (after the preflight), retry, cancel, reap; the only module that enqueues runs.

A run is executed, and finished, by domain/execution.py on a worker."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from projects.models import Project
from tasks.models import Annotation

from marker_ls_plugin.conf import get_config, queue_backend
from marker_ls_plugin.domain import preflight
from marker_ls_plugin.domain.execution import finish
from marker_ls_plugin.domain.projects import check_model_choice
from marker_ls_plugin.domain.queues import QueueUnavailable, enqueue, job_id_for, job_status, pid_alive
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.training.config import TrainingArguments

logger = logging.getLogger(__name__)

EXECUTE_RUN = "marker_ls_plugin.jobs.execute_run"


class RunRefused(ValueError):
    """A run was not started because the project cannot be trained yet; ``problems`` says what to do, one each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def active_model_for(project) -> OCRModel | None:
    config = ProjectConfig.objects.filter(project=project).select_related("active_model").first()
    return config.active_model if config else None


def on_annotation_created(project_id: int) -> None:
    """Check the project's retrain threshold once the new annotation is committed.

    Called from Label Studio's annotation save: whatever happens here is logged, never raised.
    """
    try:
        transaction.on_commit(lambda: check_retrain_threshold(project_id), robust=True)
    except Exception:
        logger.exception("project %s: could not schedule the retrain threshold check", project_id)


def check_retrain_threshold(project_id: int) -> FineTuneRun | None:
    """Start an automatic run when ``retrain_every`` annotations arrived since the last run; never raises."""
    try:
        return _check_retrain_threshold(project_id)
    except Exception:
        logger.exception("project %s: the retrain threshold check failed", project_id)
        return None


def _check_retrain_threshold(project_id: int) -> FineTuneRun | None:
    # A primary-key lookup, not a process cache: the setting changes in other processes (API, admin).
    every = ProjectConfig.objects.filter(pk=project_id).values_list("retrain_every", flat=True).first()
    if not every:
        return None
    annotations = Annotation.objects.filter(project_id=project_id, was_cancelled=False)
    last_run = FineTuneRun.objects.filter(project_id=project_id).order_by("-created_at").first()
    if last_run is not None:
        annotations = annotations.filter(created_at__gt=last_run.created_at)
    if annotations.count() < every:
        return None
    try:
        run, created = start_run(last_run.project if last_run else _project(project_id),
                                 trigger=FineTuneRun.Trigger.AUTO)
    except RunRefused as exc:
        logger.info("project %s: retrain threshold reached but no run started: %s", project_id, exc)
        return None
    if created:
        logger.info("project %s: %s new annotations, started automatic run %s", project_id, every, run.pk)
        return run
    logger.info("project %s: retrain threshold reached but run %s is still %s", project_id, run.pk, run.status)
    return None


def _project(project_id: int):
    return Project.objects.get(pk=project_id)


def start_run(
    project,
    *,
    started_by=None,
    trigger: str = FineTuneRun.Trigger.API,
    config: dict[str, Any] | None = None,
    base_model: OCRModel | None = None,
    retry_of: FineTuneRun | None = None,
) -> tuple[FineTuneRun, bool]:
    """Record a run for ``project`` and enqueue it; return ``(run, created)``.

    A project has at most one queued or running run (a database constraint): starting another
    returns the existing one with ``created=False``. A project the run cannot train (training_problems)
    raises RunRefused, and nothing is written.
    """
    arguments = TrainingArguments.from_dict(config)  # invalid config fails before anything is written
    check_model_choice(project, base_model)
    reap_stale_runs(project=project)
    existing = _active_run(project)
    if existing:
        return existing, False
    problems = preflight.training_problems(project, base_model, arguments.to_dict())
    if problems:
        raise RunRefused(problems)
    backend = queue_backend()
    job_id = job_id_for("run")
    try:
        with transaction.atomic():
            run = FineTuneRun.objects.create(
                project=project,
                started_by=started_by,
                trigger=trigger,
                config=arguments.to_dict(),
                base_model=base_model or active_model_for(project),
                queue_backend=backend,
                job_id=job_id,
                retry_of=retry_of,
            )
    except IntegrityError:
        existing = _active_run(project)
        if existing:  # a concurrent start won the race
            return existing, False
        raise
    transaction.on_commit(lambda: _enqueue_run(run.pk))
    run.refresh_from_db()  # outside a transaction the enqueue has happened, or failed, by now
    return run, True


def retry_run(run: FineTuneRun, *, started_by=None) -> tuple[FineTuneRun, bool]:
    """Start a new run like ``run`` (same project, base model and configuration), linked to it by ``retry_of``.

    Only a cancelled run, or one that failed for a reason outside it (``retryable``: worker lost, job timeout),
    is retried: any other failure would come back the same.
    """
    if not run.can_retry:
        if run.status == FineTuneRun.Status.FAILED:
            reason = f" ({run.error})" if run.error else ""
            raise ValueError(f"run {run.pk} failed{reason}, and a retry would fail the same way: fix the cause, "
                             f"then start a new run")
        raise ValueError(f"run {run.pk} is {run.status}; only cancelled runs and runs whose worker was lost or "
                         f"timed out can be retried")
    return start_run(run.project, started_by=started_by or run.started_by, trigger=run.trigger, config=run.config,
                     base_model=run.base_model, retry_of=run)


def _active_run(project) -> FineTuneRun | None:
    return FineTuneRun.objects.filter(project=project, status__in=FineTuneRun.ACTIVE_STATUSES).first()


def _enqueue_run(run_pk: int) -> None:
    run = FineTuneRun.objects.get(pk=run_pk)
    try:
        config = get_config()
        enqueue(EXECUTE_RUN, run.pk, queue=config["TRAINING_QUEUE"], job_id=run.job_id, timeout=config["RUN_TIMEOUT"])
    except QueueUnavailable as exc:
        logger.error("run %s could not be queued: %s", run.pk, exc)
        finish(run, FineTuneRun.Status.FAILED, error=f"could not be queued: {exc}", retryable=True)


def cancel_run(run: FineTuneRun) -> FineTuneRun:
    """Cancel a queued run at once; ask a running one to stop at its next step.

    A run that already registered its model is past cancelling (the model is registered, maybe active): the
    request is refused and the run ends succeeded. The run's row lock orders this against the job's
    registration (execution.RunContext.committing), so the two never both win.
    """
    with transaction.atomic():
        status = FineTuneRun.objects.select_for_update().filter(pk=run.pk).values_list("status", flat=True).first()
        if status == FineTuneRun.Status.QUEUED:
            FineTuneRun.objects.filter(pk=run.pk).update(
                status=FineTuneRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
            )
        elif status == FineTuneRun.Status.RUNNING:
            running = FineTuneRun.objects.filter(pk=run.pk, status=FineTuneRun.Status.RUNNING)
            if not running.filter(result_model__isnull=True).update(cancel_requested=True):
                logger.info("run %s registered its model already; the cancel is refused", run.pk)
    run.refresh_from_db()
    return run


def reap_stale_runs(project=None) -> list[FineTuneRun]:
    """Fail runs nothing will ever finish; return them.

    Running runs whose worker stopped sending heartbeats, queued embedded runs of a server that stopped, and
    queued RQ runs whose job is gone from Redis or failed before the run started. Called by the periodic
    reaper of workers and of the embedded executor (reaper.py), by ``marker-ls reap`` and when a run starts;
    never by a GET.
    """
    timeout = get_config()["HEARTBEAT_TIMEOUT"]
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = FineTuneRun.objects.filter(status=FineTuneRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    if project is not None:
        stale = stale.filter(project=project)
    reaped = []
    for run in stale:
        last = run.heartbeat_at.isoformat(timespec="seconds")
        message = (
            f"worker stopped: no heartbeat from {run.worker or 'the worker'} since {last} "
            f"(timeout {timeout} s); it was killed, ran out of memory or lost its host"
        )
        if finish(run, FineTuneRun.Status.FAILED, error=message, retryable=True):
            logger.warning("run %s: %s", run.pk, message)
            reaped.append(run)
    reaped.extend(_reap_orphaned_embedded_runs(project))
    reaped.extend(_reap_lost_rq_runs(project))
    return reaped


def _reap_orphaned_embedded_runs(project=None) -> list[FineTuneRun]:
    """Queued embedded runs belong to one server process; fail them when it is gone."""
    queued = FineTuneRun.objects.filter(
        status=FineTuneRun.Status.QUEUED, queue_backend="embedded", job_id__startswith="embedded:"
    )
    if project is not None:
        queued = queued.filter(project=project)
    reaped = []
    for run in queued:
        pid = int(run.job_id.split(":")[1])
        if pid == os.getpid() or pid_alive(pid):
            continue
        message = "the server that queued this run stopped before it ran; start it again"
        if finish(run, FineTuneRun.Status.FAILED, error=message, retryable=True):
            reaped.append(run)
    return reaped


def _reap_lost_rq_runs(project=None) -> list[FineTuneRun]:
    """Queued RQ runs whose job is gone, or ended before the run started: nothing will ever run them.

    A run younger than HEARTBEAT_TIMEOUT is left alone: its job is queued once the run's row commits.
    """
    if queue_backend() != "rq":
        return []  # no Redis to ask
    config = get_config()
    cutoff = timezone.now() - timedelta(seconds=config["HEARTBEAT_TIMEOUT"])
    queued = FineTuneRun.objects.filter(status=FineTuneRun.Status.QUEUED, queue_backend="rq", created_at__lt=cutoff)
    if project is not None:
        queued = queued.filter(project=project)
    reaped = []
    for run in queued:
        try:
            state = job_status(run.job_id, config["TRAINING_QUEUE"])
        except QueueUnavailable as exc:
            logger.warning("cannot tell whether queued runs still have their jobs: %s", exc)
            break
        if state is None:
            message = (f"its job {run.job_id} is not in Redis: the server stopped before queuing it, or Redis lost "
                       f"it (flushed, or restarted without persistence); start the run again")
        elif state in ("failed", "stopped", "canceled"):
            message = f"its job {run.job_id} {state} before the run started; see the worker's log, then retry"
        else:
            continue
        if finish(run, FineTuneRun.Status.FAILED, error=message, retryable=True,
                  from_statuses=(FineTuneRun.Status.QUEUED,)):
            logger.warning("run %s: %s", run.pk, message)
            reaped.append(run)
    return reaped
