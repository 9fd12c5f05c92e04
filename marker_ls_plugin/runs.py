"""Fine-tune run operations: start, cancel, reap; the only module that enqueues runs."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from marker_ls_plugin.conf import get_config, queue_backend
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.processes import pid_alive
from marker_ls_plugin.queues import QueueUnavailable, enqueue, job_id_for
from marker_ls_plugin.training.config import TrainingArguments

logger = logging.getLogger(__name__)

EXECUTE_RUN = "marker_ls_plugin.jobs.execute_run"


def active_model_for(project) -> OCRModel | None:
    config = ProjectConfig.objects.filter(project=project).select_related("active_model").first()
    return config.active_model if config else None


def start_run(
    project,
    *,
    started_by=None,
    trigger: str = FineTuneRun.Trigger.API,
    config: dict[str, Any] | None = None,
    base_model: OCRModel | None = None,
) -> tuple[FineTuneRun, bool]:
    """Record a run for ``project`` and enqueue it; return ``(run, created)``.

    A project has at most one queued or running run (a database constraint): starting another
    returns the existing one with ``created=False``.
    """
    arguments = TrainingArguments.from_dict(config)  # invalid config fails before anything is written
    reap_stale_runs(project=project)
    existing = _active_run(project)
    if existing:
        return existing, False
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
            )
    except IntegrityError:
        existing = _active_run(project)
        if existing:  # a concurrent start won the race
            return existing, False
        raise
    transaction.on_commit(lambda: _enqueue_run(run.pk))
    run.refresh_from_db()  # outside a transaction the enqueue has happened, or failed, by now
    return run, True


def _active_run(project) -> FineTuneRun | None:
    return FineTuneRun.objects.filter(project=project, status__in=FineTuneRun.ACTIVE_STATUSES).first()


def _enqueue_run(run_pk: int) -> None:
    run = FineTuneRun.objects.get(pk=run_pk)
    try:
        config = get_config()
        enqueue(EXECUTE_RUN, run.pk, queue=config["TRAINING_QUEUE"], job_id=run.job_id, timeout=config["RUN_TIMEOUT"])
    except QueueUnavailable as exc:
        logger.error("run %s could not be queued: %s", run.pk, exc)
        finish(run, FineTuneRun.Status.FAILED, error=f"could not be queued: {exc}")


def cancel_run(run: FineTuneRun) -> FineTuneRun:
    """Cancel a queued run at once; ask a running one to stop at its next step."""
    updated = FineTuneRun.objects.filter(pk=run.pk, status=FineTuneRun.Status.QUEUED).update(
        status=FineTuneRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    if not updated:
        FineTuneRun.objects.filter(pk=run.pk, status=FineTuneRun.Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    return run


def finish(run: FineTuneRun, status: str, *, error: str = "") -> bool:
    """Move an active run to a final status; False when it had already finished."""
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if error:
        fields["error"] = error
    if status == FineTuneRun.Status.SUCCEEDED:
        fields["progress"] = 1.0
    done = FineTuneRun.objects.filter(pk=run.pk, status__in=FineTuneRun.ACTIVE_STATUSES).update(**fields)
    run.refresh_from_db()
    return bool(done)


def reap_stale_runs(project=None) -> list[FineTuneRun]:
    """Fail running runs whose worker stopped sending heartbeats; return them."""
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
        if finish(run, FineTuneRun.Status.FAILED, error=message):
            logger.warning("run %s: %s", run.pk, message)
            reaped.append(run)
    reaped.extend(_reap_orphaned_embedded_runs(project))
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
        if finish(run, FineTuneRun.Status.FAILED, error=message):
            reaped.append(run)
    return reaped

