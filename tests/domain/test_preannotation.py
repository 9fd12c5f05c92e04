"""The pre-annotation pipeline in-process: model choice, surya tiny models, engine unavailable."""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings
from mls_factories import make_project
from mls_render import render_page
from tasks.models import Prediction, Task

from marker_ls_plugin.domain import activation, engines, predictions
from marker_ls_plugin.domain.preannotation import pending_tasks, requeue
from marker_ls_plugin.domain.predictions import preannotate_tasks
from marker_ls_plugin.domain.projects import model_checkpoint, model_choice, should_preannotate
from marker_ls_plugin.models import OCRModel, ProjectConfig, TaskOCR
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG


def ocr_project(title):
    project = make_project(title)
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    return project


def upload_task(project, name="page.png"):
    image, _ = render_page(["Hello world 123", "Second line here"], size=(800, 200), font_size=28)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = default_storage.save(f"upload/{project.pk}/{name}", ContentFile(buffer.getvalue()))
    return Task.objects.create(project=project, data={"image": f"/data/{path}"})


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from surya_tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("surya-tiny"))


def test_model_choice_follows_the_active_model():
    project = ocr_project("choice")
    assert model_choice(project).version == "marker-rapidocr-base"
    model = OCRModel.objects.create(name="line-ft-1", engine="surya", checkpoint="/models/recognition/line-ft-1",
                                    kind="finetuned")
    ProjectConfig.objects.filter(project=project).update(active_model=model)
    choice = model_choice(project)
    assert (choice.version, choice.engine) == ("line-ft-1", "surya")
    assert choice.options["recognition_checkpoint"] == "/models/recognition/line-ft-1"


def test_fine_tuned_models_default_to_the_models_directory():
    from django.conf import settings as django_settings

    model = OCRModel(name="ft-7", engine="surya", kind="finetuned")
    with override_settings(MARKER_LS={**django_settings.MARKER_LS, "MODELS_DIR": "/srv/models"}):
        assert model_checkpoint(model) == "/srv/models/recognition/ft-7"
    assert model_checkpoint(OCRModel(name="base", engine="surya", kind="base")) is None


def test_only_ocr_shaped_projects_preannotate():
    assert should_preannotate(ocr_project("ocr shaped"))
    assert not should_preannotate(make_project("default config"))
    project = ocr_project("switched off")
    ProjectConfig.objects.update_or_create(project=project, defaults={"preannotate": False})
    assert not should_preannotate(project)


def test_surya_tiny_models_write_predictions_with_the_models_version(tiny_models):
    project = ocr_project("surya tiny")
    tasks = [upload_task(project, f"p{i}.png") for i in range(2)]
    model = OCRModel.objects.create(name="tiny-surya", engine="surya", checkpoint=str(tiny_models["recognition"]))
    ProjectConfig.objects.update_or_create(project=project, defaults={"active_model": model})
    with override_settings(MARKER_LS={"SURYA_DETECTION_CHECKPOINT": str(tiny_models["detection"]),
                                      "TORCH_DEVICE": "cpu"}):
        summary = preannotate_tasks(project.pk, [t.pk for t in tasks])
        assert summary == {"predicted": 2, "failed": 0, "skipped": 0}
        again = preannotate_tasks(project.pk, [t.pk for t in tasks])
    assert again["skipped"] == 2  # a version predicts a task once unless forced
    predictions = Prediction.objects.filter(task__in=tasks)
    assert predictions.count() == 2 and {p.model_version for p in predictions} == {"tiny-surya"}
    project.refresh_from_db()
    assert project.model_version == "tiny-surya"
    assert set(TaskOCR.objects.filter(task__in=tasks).values_list("status", flat=True)) == {"done"}
    assert not pending_tasks(project, "tiny-surya").exists()


def test_engine_unavailable_is_explained_and_loses_nothing(tmp_path):
    project = ocr_project("surya missing")
    task = upload_task(project)
    ProjectConfig.objects.update_or_create(project=project, defaults={"engine": "surya"})
    missing = str(tmp_path / "no-such-checkpoint")
    with override_settings(MARKER_LS={"SURYA_RECOGNITION_CHECKPOINT": missing,
                                      "SURYA_DETECTION_CHECKPOINT": missing}):
        summary = preannotate_tasks(project.pk, [task.pk])
    assert summary["predicted"] == 0
    error = ProjectConfig.objects.get(project=project).engine_error
    assert "surya" in error and "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in error and "MARKER_LS[" not in error
    assert Task.objects.filter(pk=task.pk).exists() and not task.predictions.exists()
    assert pending_tasks(project, model_choice(project).version).filter(pk=task.pk).exists()


def test_forcing_skips_an_unchanged_task_and_replaces_a_changed_ones_prediction():
    project = ocr_project("forced")
    task = upload_task(project)
    preannotate_tasks(project.pk, [task.pk])  # unless the import's own job predicted it already
    [first] = Prediction.objects.filter(task=task)
    assert preannotate_tasks(project.pk, [task.pk], force=True) == {"predicted": 0, "failed": 0, "skipped": 1}
    assert requeue(project, [task.pk]) == (0, 1, "marker-rapidocr-base")  # nothing to queue
    task.data = {**task.data, "note": "rescanned"}
    task.save()
    assert preannotate_tasks(project.pk, [task.pk], force=True)["predicted"] == 1
    [second] = Prediction.objects.filter(task=task)
    assert second.pk != first.pk and second.model_version == first.model_version
    task.refresh_from_db()
    assert task.total_predictions == 1
    assert preannotate_tasks(project.pk, [task.pk], force=True)["skipped"] == 1


def test_queued_jobs_leave_annotated_tasks_alone_unless_forced():
    from tasks.models import Annotation

    from marker_ls_plugin.jobs import preannotate

    project = ocr_project("annotated stay")
    annotated, fresh = upload_task(project, "a.png"), upload_task(project, "b.png")
    Annotation.objects.create(task=annotated, project=project, result=[], completed_by=project.created_by)
    Prediction.objects.filter(task__project=project).delete()  # whatever the creation hooks predicted
    TaskOCR.objects.filter(task__project=project).delete()
    assert preannotate(project.pk, [annotated.pk, fresh.pk]) == {"predicted": 1, "failed": 0, "skipped": 1}
    assert set(Prediction.objects.filter(task__project=project).values_list("task_id", flat=True)) == {fresh.pk}
    # the Data Manager action forces; Label Studio's own requests (connector) ask for any task
    assert preannotate(project.pk, [annotated.pk], True)["predicted"] == 1


def test_a_task_another_thread_reads_is_waited_for_and_the_others_are_read_at_once():
    """A page opened while the queue reads others of its project is read by the request, not after the batch."""
    project = ocr_project("claims")
    held, free = upload_task(project, "held.png"), upload_task(project, "free.png")
    Prediction.objects.filter(task__project=project).delete()  # whatever the creation hooks predicted
    TaskOCR.objects.filter(task__project=project).delete()
    assert predictions._claims.claim(held.pk) is None  # a queued job is reading it
    done = []
    waiter = threading.Thread(target=lambda: done.append(preannotate_tasks(project.pk, [held.pk, free.pk])))
    try:
        waiter.start()
        deadline = time.monotonic() + 60
        while not Prediction.objects.filter(task=free).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Prediction.objects.filter(task=free).count() == 1  # the free one is read at once...
        waiter.join(0.5)
        assert waiter.is_alive() and not done  # ...and the call waits for the holder of the held one
    finally:
        predictions._claims.release(held.pk)  # the holder stored nothing: the waiter reads it after all
    waiter.join(60)
    assert done == [{"predicted": 2, "failed": 0, "skipped": 0}]
    assert Prediction.objects.filter(task=held).count() == 1


def test_activating_another_model_frees_the_engine_of_the_one_no_project_uses(tiny_models):
    from marker_ls_plugin.ocr import pool

    old = OCRModel.objects.create(name="tiny-old", engine="surya", checkpoint=str(tiny_models["recognition"]))
    new = OCRModel.objects.create(name="tiny-new", engine="surya", checkpoint=str(tiny_models["recognition"]) + "/")
    first, second = ocr_project("evict first"), ocr_project("evict second")
    for project in (first, second):
        activation.activate_model(project, old)
    with override_settings(MARKER_LS={"SURYA_DETECTION_CHECKPOINT": str(tiny_models["detection"]),
                                      "TORCH_DEVICE": "cpu", "REPREDICT_ON_ACTIVATE": False}):
        task = upload_task(first)
        preannotate_tasks(first.pk, [task.pk], force=True)  # unless the import's own job predicted it already
        assert list(task.predictions.values_list("model_version", flat=True)) == ["tiny-old"]
        choice = model_choice(first)
        engine = engines.get_engine(choice.engine, **choice.options)
        assert engine.loaded

        activation.activate_model(first, new)  # the second project still reads with the old model
        assert engine.loaded and engine in pool.loaded_engines()
        activation.activate_model(second, new)
        assert not engine.loaded and engine not in pool.loaded_engines()
