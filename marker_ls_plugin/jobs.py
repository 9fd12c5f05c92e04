"""Queue entry points. They take primary keys, reload rows and call plain functions."""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rq.timeouts import JobTimeoutException

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.runs import finish
from marker_ls_plugin.models import FineTuneRun
from marker_ls_plugin.ocr.availability import first_line
from marker_ls_plugin.training.config import TrainingArguments

logger = logging.getLogger(__name__)


class RunCancelled(Exception):
    """Raised inside a run when the user asked it to stop."""


class RunContext:
    """What a run function sees: its arguments, and callbacks for progress, logs and stopping."""

    def __init__(self, run: FineTuneRun):
        self.run = run
        self.arguments = TrainingArguments.from_dict(run.config)
        self._log_lines = run.log_tail.splitlines()

    def should_stop(self) -> bool:
        """True once a cancel was requested (read from the database)."""
        return FineTuneRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists()

    def report(
        self,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        epoch: float | None = None,
        metrics: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        """Record progress; raise RunCancelled if the user cancelled. Call between steps."""
        fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
        for name, value in (("step", step), ("total_steps", total_steps), ("epoch", epoch), ("dataset", dataset)):
            if value is not None:
                fields[name] = value
        total = total_steps if total_steps is not None else self.run.total_steps
        if step is not None and total:
            fields["progress"] = min(1.0, step / total)
        if metrics:
            self.run.metrics = [*self.run.metrics, {"step": step, **metrics}]
            fields["metrics"] = self.run.metrics
        FineTuneRun.objects.filter(pk=self.run.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.run, name, value)
        if self.should_stop():
            raise RunCancelled()

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Hold off cancels while the run's result is registered (and activated), in one transaction.

        A cancel that came first stops the run here (RunCancelled, nothing registered); one that comes while
        or after the block runs is refused by runs.cancel_run, so the run ends succeeded with its model.
        """
        with transaction.atomic():
            locked = FineTuneRun.objects.select_for_update().filter(pk=self.run.pk)
            if locked.values_list("cancel_requested", flat=True).first():
                raise RunCancelled()
            yield

    def log(self, line: str) -> None:
        """Append a line to the run's log tail (the last LOG_TAIL_LINES lines are kept)."""
        keep = get_config()["LOG_TAIL_LINES"]
        self._log_lines = [*self._log_lines, *line.splitlines()][-keep:]
        self.run.log_tail = "\n".join(self._log_lines)
        FineTuneRun.objects.filter(pk=self.run.pk).update(log_tail=self.run.log_tail)


class _Heartbeat(threading.Thread):
    """Writes the run's heartbeat while its function executes, even inside a long step."""

    def __init__(self, run_pk: int, interval: float):
        super().__init__(daemon=True, name=f"marker-ls-heartbeat-{run_pk}")
        self.run_pk, self.interval = run_pk, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                FineTuneRun.objects.filter(pk=self.run_pk, status=FineTuneRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:
            logger.exception("heartbeat for run %s stopped", self.run_pk)
        finally:
            connection.close()


def execute_run(run_pk: int) -> str:
    """Execute fine-tune run ``run_pk`` on this worker; return its final status."""
    close_old_connections()
    now = timezone.now()
    claimed = FineTuneRun.objects.filter(pk=run_pk, status=FineTuneRun.Status.QUEUED).update(
        status=FineTuneRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    run = FineTuneRun.objects.get(pk=run_pk)
    if not claimed:  # cancelled while queued, or already executed
        logger.info("run %s is %s; nothing to do", run_pk, run.status)
        return run.status
    heartbeat = _Heartbeat(run_pk, get_config()["HEARTBEAT_INTERVAL"])
    heartbeat.start()
    context = RunContext(run)
    try:
        import_string(get_config()["RUN_FUNCTION"])(context)
    except RunCancelled:
        finish(run, FineTuneRun.Status.CANCELLED)
    except Exception as exc:
        logger.exception("run %s failed", run_pk)
        # A job timeout is the queue's limit, not the run's fault: a retry (maybe with a longer RUN_TIMEOUT) may pass.
        finish(run, FineTuneRun.Status.FAILED, error=error_line(exc), traceback=traceback.format_exc(),
               retryable=isinstance(exc, JobTimeoutException))
    else:
        status = FineTuneRun.Status.CANCELLED if context.should_stop() else FineTuneRun.Status.SUCCEEDED
        finish(run, status)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    return run.status


def error_line(exc: BaseException) -> str:
    """``"<ExceptionType>: <first line of its message>"``: what a run page shows first; the traceback follows."""
    message = first_line(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def preannotate(project_pk: int, task_pks: list[int], force: bool = False) -> dict[str, int]:
    """Pre-annotate tasks of a project (queue entry point).

    Queued work (imports, sweeps, a new active model) leaves tasks someone already annotated alone; the
    Data Manager action forces, and Label Studio's own requests go through the connector, not the queue.
    """
    from marker_ls_plugin.domain.preannotation import preannotate_tasks

    close_old_connections()
    return preannotate_tasks(project_pk, task_pks, force, unannotated_only=not force)
