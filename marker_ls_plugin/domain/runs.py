"""Fine-tune run operations: start, cancel, reap; the only module that enqueues runs."""

from __future__ import annotations

import logging
import math
import os
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from marker_ls_plugin.conf import DEFAULTS, get_config, queue_backend
from marker_ls_plugin.domain.queues import QueueUnavailable, enqueue, job_id_for, job_status, pid_alive
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.training.config import TrainingArguments

logger = logging.getLogger(__name__)

EXECUTE_RUN = "marker_ls_plugin.jobs.execute_run"
FINETUNE = DEFAULTS["RUN_FUNCTION"]  # the built-in fine-tune, whose needs training_problems checks


class RunRefused(ValueError):
    """A run was not started because the project cannot be trained yet; ``problems`` says what to do, one each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def active_model_for(project) -> OCRModel | None:
    config = ProjectConfig.objects.filter(project=project).select_related("active_model").first()
    return config.active_model if config else None


def activate_model(project, model: OCRModel | None) -> ProjectConfig:
    """Make ``model`` the one that pre-annotates ``project`` (None: back to the engine's default).

    The API, the admin and the training job all activate through here. With REPREDICT_ON_ACTIVATE, tasks
    nobody annotated yet that lack a prediction from the new model are queued once the change commits.
    """
    from marker_ls_plugin.domain.preannotation import release_model, sweep

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


def check_model_choice(project, model: OCRModel | None) -> None:
    """Refuse a model ``project``'s organization may not use, in the words used for one that does not exist."""
    if model is not None and not OCRModel.objects.for_project(project).filter(pk=model.pk).exists():
        raise ValueError(f"model {model.pk} does not exist")


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
    from tasks.models import Annotation

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


def training_problems(project, base_model: OCRModel | None = None,
                      config: dict[str, Any] | None = None) -> list[str]:
    """What keeps the built-in fine-tune from training ``project`` now, in the user's words; empty when nothing.

    A trainable engine (a surya model to start from), weights that load, and enough annotated lines in each
    split (counted as the run's export will split them, reading no image). Checked before a run is recorded,
    so that a run that cannot train never starts. A custom RUN_FUNCTION has needs of its own: nothing is checked.
    """
    from marker_ls_plugin.dataset.export import count_lines

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
    from marker_ls_plugin.domain.preannotation import model_checkpoint, model_choice
    from marker_ls_plugin.ocr.engines import resolve_surya_checkpoint
    from marker_ls_plugin.ocr.types import EngineUnavailable

    page = reverse("marker_ls_plugin:project", kwargs={"project_pk": project.pk})
    switch = f"switch the project to a surya model on its OCR page {page}"
    model = base_model or active_model_for(project)
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


def _project(project_id: int):
    from projects.models import Project

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
    problems = training_problems(project, base_model, arguments.to_dict())
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
    registration (jobs.RunContext.committing), so the two never both win.
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


def finish(run: FineTuneRun, status: str, *, error: str = "", traceback: str = "", retryable: bool = False,
           from_statuses: tuple[str, ...] = FineTuneRun.ACTIVE_STATUSES) -> bool:
    """Move a run in one of ``from_statuses`` (default: any active one) to a final status; False when it was not.

    ``error`` is one line; ``retryable`` marks a failure from outside the run, which a retry may not meet.
    """
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "retryable": retryable}
    if error:
        fields["error"] = error
    if traceback:
        fields["traceback"] = traceback
    if status == FineTuneRun.Status.SUCCEEDED:
        fields["progress"] = 1.0
    done = FineTuneRun.objects.filter(pk=run.pk, status__in=from_statuses).update(**fields)
    run.refresh_from_db()
    return bool(done)


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
