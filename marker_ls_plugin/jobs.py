"""Queue entry points (their dotted paths are stored in Redis with each job). They take primary keys, close stale
database connections and call the domain: a run's execution (domain/execution.py), a pre-annotation batch
(domain/predictions.py), a project's drain of its pending tasks (batches from domain/preannotation.py)."""

from __future__ import annotations

from django.db import close_old_connections

from marker_ls_plugin.domain import execution, preannotation, predictions


def execute_run(run_pk: int) -> str:
    """Execute fine-tune run ``run_pk`` on this worker; return its final status."""
    close_old_connections()
    return execution.execute_run(run_pk)


def preannotate(project_pk: int, task_pks: list[int], force: bool = False) -> dict[str, int]:
    """Pre-annotate tasks of a project (queue entry point).

    Queued work (sweeps, a new active model; imports go through ``preannotate_pending``) leaves tasks someone
    already annotated alone; the Data Manager action forces, and Label Studio's own requests go through the
    connector, not the queue.
    """
    close_old_connections()
    return predictions.preannotate_tasks(project_pk, task_pks, force, unannotated_only=not force)


def preannotate_pending(project_pk: int) -> dict[str, int]:
    """Pre-annotate a project's pending tasks in batches (the drain job that imports ask for; queue entry point).

    Like other queued work it leaves tasks someone already annotated alone.
    """
    close_old_connections()
    summary = {"predicted": 0, "failed": 0, "skipped": 0}
    for batch in preannotation.pending_batches(project_pk):
        for key, count in predictions.preannotate_tasks(project_pk, batch, unannotated_only=True).items():
            summary[key] += count
    return summary
