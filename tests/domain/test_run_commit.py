"""A cancel against a fine-tune run's registration: the run's state and its model's must agree.

The real job (jobs.execute_run -> execution.execute_run -> finetune.run_finetune) on a tiny surya model, in this
process; the cancel comes from another thread (its own database connection) at the moment the model is activated.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connection
from django.db.models.signals import post_save
from django.test import override_settings
from mls_factories import ocr_project, page_task

from marker_ls_plugin.domain import runs
from marker_ls_plugin.domain.execution import RunContext
from marker_ls_plugin.jobs import execute_run
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.training.config import TrainingArguments
from marker_ls_plugin.training.control import CANCELLED, TrainingStopped

pytestmark = pytest.mark.timeout(600)

ARGUMENTS = {"max_steps": 1, "per_device_train_batch_size": 2, "val_fraction": 0.5, "freeze": [],
             "mixed_precision": "no", "early_stopping_patience": None, "eval_steps": 1}


@pytest.fixture
def checkpoint(tiny_surya):
    return str(tiny_surya["recognition"])


@pytest.fixture
def finetuning(checkpoint, tmp_path):
    """Runs execute the real fine-tune; every model is activated (any CER change passes the margin)."""
    config = {**settings.MARKER_LS, "RUN_FUNCTION": "marker_ls_plugin.domain.finetune.run_finetune",
              "MODELS_DIR": str(tmp_path), "SURYA_RECOGNITION_CHECKPOINT": checkpoint, "TORCH_DEVICE": "cpu",
              "AUTO_ACTIVATE": True, "ACTIVATION_MARGIN": -1.0, "REPREDICT_ON_ACTIVATE": False}
    with override_settings(MARKER_LS=config):
        yield tmp_path


def queued_run(title: str) -> FineTuneRun:
    project = ocr_project(title)
    for i in range(3):
        page_task(project, name=f"page{i}.png")
    return FineTuneRun.objects.create(project=project, config=TrainingArguments.from_dict(ARGUMENTS).to_dict(),
                                      queue_backend="rq", job_id=f"commit-test-{project.pk}")


@contextmanager
def cancel_on_activation(run: FineTuneRun):
    """When the run's model becomes active, a user cancels the run from another connection."""
    answers: list[FineTuneRun] = []
    threads: list[threading.Thread] = []

    def cancel() -> None:
        try:
            answers.append(runs.cancel_run(FineTuneRun.objects.get(pk=run.pk)))
        finally:
            connection.close()

    def activated(sender, instance, **kwargs) -> None:
        if instance.project_id == run.project_id and instance.active_model_id:
            threads.append(threading.Thread(target=cancel))
            threads[-1].start()
            threads[-1].join(2)  # unordered, the cancel lands now; ordered, it waits for the job's commit

    post_save.connect(activated, sender=ProjectConfig, weak=False, dispatch_uid="test-cancel-on-activation")
    try:
        yield answers
    finally:
        post_save.disconnect(sender=ProjectConfig, dispatch_uid="test-cancel-on-activation")
        for thread in threads:
            thread.join(60)


def test_a_cancel_after_the_model_was_registered_and_activated_is_refused(finetuning):
    run = queued_run("commit then cancel")
    with cancel_on_activation(run) as answers:
        final = execute_run(run.pk)
    [answer] = answers
    run.refresh_from_db()
    model = OCRModel.objects.get(produced_by_run=run)
    assert (final, run.status, run.cancel_requested) == ("succeeded", "succeeded", False)
    assert runs.active_model_for(run.project) == model and (finetuning / "recognition" / model.name).is_dir()
    assert answer.pk == run.pk and not answer.cancel_requested  # the user is told it was not cancelled


def test_a_cancel_before_registration_stops_the_run_and_registers_nothing():
    run = queued_run("cancel then commit")
    FineTuneRun.objects.filter(pk=run.pk).update(status="running")
    context = RunContext(FineTuneRun.objects.get(pk=run.pk))
    runs.cancel_run(run)
    with pytest.raises(TrainingStopped), context.committing():
        OCRModel.objects.create(name=f"never-{run.pk}", produced_by_run=run)
    assert not OCRModel.objects.filter(produced_by_run=run).exists()
    assert context.control.reason == CANCELLED  # the one way a run stops: its control
