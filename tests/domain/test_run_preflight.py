"""A run that cannot train is refused before it is recorded: engine, weights, lines per split; every caller says why.

The checks are the built-in fine-tune's (RUN_FUNCTION ``marker_ls_plugin.domain.finetune.run_finetune``), on the real
thresholds (MIN_TRAIN_LINES 20, MIN_VAL_LINES 5). Lines are counted without images, so the tasks here name
images that do not exist.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re

import pytest
from django.conf import settings
from django.test import Client, override_settings
from ml.models import MLBackend
from mls_browser import logged_in
from mls_factories import annotate, make_project, make_user, region
from tasks.models import Task

from marker_ls_plugin.conf import DEFAULTS
from marker_ls_plugin.dataset.export import count_lines, split_of
from marker_ls_plugin.domain import preflight, runs
from marker_ls_plugin.ml.address import in_process_url
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

BOX = [(10, 10), (400, 10), (400, 50), (10, 50)]


@pytest.fixture
def weights(tmp_path):
    """A directory that passes for a surya checkpoint (what the check needs: its config.json)."""
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.fixture
def finetune(weights, redis_url):
    """The built-in fine-tune as RUN_FUNCTION, starting from ``weights``, on the real thresholds."""
    assert (DEFAULTS["MIN_TRAIN_LINES"], DEFAULTS["MIN_VAL_LINES"]) == (20, 5)
    with override_settings(MARKER_LS={**settings.MARKER_LS, "RUN_FUNCTION": preflight.FINETUNE, "MIN_TRAIN_LINES": 20,
                                      "MIN_VAL_LINES": 5, "SURYA_RECOGNITION_CHECKPOINT": str(weights)}):
        yield


def surya_project(title: str, lines: int, user=None, engine: str = "surya"):
    """An OCR project reading with ``engine`` and ``lines`` annotated lines, ten per task."""
    project = make_project(title, user)
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    ProjectConfig.objects.update_or_create(project=project, defaults={"engine": engine})
    for first in range(0, lines, 10):
        task = Task.objects.create(project=project, data={"image": f"/data/upload/none-{first}.png"})
        result = []
        for i in range(first, min(first + 10, lines)):
            result += region(f"r{i}", BOX, text=f"line {i}")
        annotate(task, result)
    return project


def expected_split(project, val_fraction: float = 0.1) -> dict[str, int]:
    counts = {"train": 0, "val": 0}
    for task in Task.objects.filter(project=project):
        for item in task.annotations.get().result:
            if item["type"] == "textarea":
                counts[split_of(f"{task.pk}:{item['id']}", 0, val_fraction)] += 1
    return counts


def refusal(project, **kwargs) -> list[str]:
    with pytest.raises(runs.RunRefused) as refused:
        runs.start_run(project, **kwargs)
    assert not FineTuneRun.objects.filter(project=project).exists()
    assert isinstance(refused.value, ValueError) and str(refused.value) == "; ".join(refused.value.problems)
    return refused.value.problems


def test_counting_follows_the_export_split_without_images():
    project = surya_project("count lines", 40)
    assert count_lines(project.pk) == expected_split(project)
    assert count_lines(project.pk, val_fraction=0.5) == expected_split(project, 0.5)
    assert count_lines(project.pk, labels=["Handwriting"]) == {"train": 0, "val": 0}


def test_a_rapidocr_project_or_base_model_is_refused(finetune):
    project = surya_project("preflight rapidocr", 80, engine="rapidocr")
    [problem] = refusal(project)
    assert "rapidocr" in problem and "cannot be fine-tuned" in problem
    assert f"switch the project to a surya model on its OCR page /marker-ls/projects/{project.pk}/" in problem

    surya = surya_project("preflight rapidocr base", 80)
    model = OCRModel.objects.create(name=f"rapid-{surya.pk}", engine="rapidocr", organization=surya.organization)
    [problem] = refusal(surya, base_model=model)
    assert problem.startswith(f"rapid-{surya.pk} is a rapidocr model and only surya models can be fine-tuned")


def test_weights_that_do_not_load_are_refused(finetune, tmp_path):
    project = surya_project("preflight weights", 80)
    missing = tmp_path / "no-such-checkpoint"
    with override_settings(MARKER_LS={**settings.MARKER_LS, "SURYA_RECOGNITION_CHECKPOINT": str(missing)}):
        [problem] = refusal(project)
    assert problem.startswith("the surya weights to start from cannot be loaded: ")
    assert str(missing) in problem and "SURYA_RECOGNITION_CHECKPOINT" in problem


def test_too_few_lines_are_refused_with_how_many_more(finetune):
    project = surya_project("preflight lines", 10)
    counts = expected_split(project)
    problems = refusal(project)
    assert problems[0].startswith(f"the training split has {counts['train']} annotated lines and a run needs 20; ")
    # new lines land in training 90% of the time (val_fraction 0.1)
    assert f"annotate about {math.ceil((20 - counts['train']) / 0.9)} more lines" in problems[0]
    assert "MARKER_LS_MIN_TRAIN_LINES" in problems[0]
    if counts["val"] < 5:
        assert problems[1].startswith(f"the validation split has {counts['val']} annotated lines and a run needs 5")
        assert "MARKER_LS_MIN_VAL_LINES" in problems[1]
    # the labels filter and the split are the run's own
    assert "needs 20" in refusal(surya_project("preflight labels", 80), config={"labels": ["Handwriting"]})[0]


def test_enough_lines_start_a_run(finetune):
    project = surya_project("preflight enough", 80)
    config = {"val_fraction": 0.3}  # 80 lines: about 24 validation lines whatever the task ids
    counts = expected_split(project, 0.3)
    assert counts["train"] >= 20 and counts["val"] >= 5, counts
    assert preflight.training_problems(project, None, config) == []
    run, created = runs.start_run(project, config=config)
    try:
        assert created and run.status == "queued"
        # an active run is still answered, whatever the checks would say now
        assert runs.start_run(project, config={"labels": ["Handwriting"]}) == (run, False)
    finally:
        runs.cancel_run(run)


def test_a_custom_run_function_is_not_checked(redis_url):
    project = surya_project("preflight custom", 0, engine="rapidocr")
    assert settings.MARKER_LS["RUN_FUNCTION"] != preflight.FINETUNE
    assert preflight.training_problems(project) == []


def test_every_caller_says_why_and_records_no_run(finetune, caplog):
    user = make_user()
    user.is_staff = user.is_superuser = True
    user.save()
    client = logged_in(user)
    project = surya_project("preflight callers", 10, user)
    counts = expected_split(project)

    response = client.post(f"/marker-ls/api/projects/{project.pk}/runs/", {}, content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["problems"][0].startswith(f"the training split has {counts['train']} annotated lines")
    assert body["detail"] == "no run started: " + "; ".join(body["problems"])

    page = client.post(f"/marker-ls/projects/{project.pk}/runs/start/")
    assert page.status_code == 400
    html = page.content.decode()
    assert f"No run started for {project.title}" in html and "MARKER_LS_MIN_TRAIN_LINES" in html

    admin = client.post("/admin/marker_ls_plugin/ocrproject/", {"action": "start_runs", "index": 0,
                                                                "_selected_action": [project.pk]}, follow=True)
    assert admin.status_code == 200
    [message] = re.findall(r'<li class="error">(.*?)</li>', admin.content.decode())
    assert message.lower().startswith(f"{project.title.lower()}: no run started: the training split has")

    add = client.post("/admin/marker_ls_plugin/finetunerun/add/", {"project": project.pk, "config": "{}"})
    assert add.status_code == 200  # the form again, with the reason
    assert "the training split has" in add.content.decode() and "MARKER_LS_MIN_TRAIN_LINES" in add.content.decode()

    ProjectConfig.objects.filter(project=project).update(retrain_every=1)
    with caplog.at_level(logging.INFO, logger="marker_ls_plugin.domain.runs"):
        assert runs.check_retrain_threshold(project.pk) is None
    [record] = [r for r in caplog.records if "retrain threshold reached but no run started" in r.getMessage()]
    assert record.levelno == logging.INFO

    token = ProjectConfig.objects.get(project=project).ml_token
    basic = "Basic " + base64.b64encode(f"project-{project.pk}:{token}".encode()).decode()
    event = Client().post("/marker-ls/ml/webhook", json.dumps({"action": "START_TRAINING", "project": {
        "id": project.pk}}), content_type="application/json", HTTP_AUTHORIZATION=basic)
    assert event.status_code == 400 and event.json()["problems"] == body["problems"]

    # Label Studio's Start Training on the project's in-process backend
    backend = MLBackend.objects.filter(project=project, url=in_process_url()).first() or MLBackend.objects.create(
        project=project, url=in_process_url(), title="Marker OCR")
    train = client.post(f"/api/ml/{backend.pk}/train", {}, content_type="application/json")
    assert train.status_code == 400 and train.json() == {"detail": body["detail"]}

    assert not FineTuneRun.objects.filter(project=project).exists()
