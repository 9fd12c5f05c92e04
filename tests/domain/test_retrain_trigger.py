"""retrain_every: every N new annotations start an automatic run; never in Label Studio's way."""

from __future__ import annotations

import logging

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from mls_factories import make_project, make_user
from mls_helpers import wait_for
from tasks.models import Annotation, Task

from marker_ls_plugin.domain import runs
from marker_ls_plugin.models import FineTuneRun, ProjectConfig


@pytest.fixture
def project(redis_url):  # the runs it starts are queued on the tests' Redis
    user = make_user()
    project = make_project("retrain threshold", user)
    project.test_user = user
    yield project
    for run in FineTuneRun.objects.filter(project=project, status__in=FineTuneRun.ACTIVE_STATUSES):
        runs.cancel_run(run)


def annotate(project, *, was_cancelled: bool = False) -> Annotation:
    task = Task.objects.create(project=project, data={"image": "/data/page.png"})
    return Annotation.objects.create(task=task, project=project, completed_by=project.test_user,
                                     result=[], was_cancelled=was_cancelled)


def set_threshold(project, every):
    ProjectConfig.objects.update_or_create(project=project, defaults={"retrain_every": every})


def auto_runs(project):
    return list(FineTuneRun.objects.filter(project=project, trigger=FineTuneRun.Trigger.AUTO).order_by("pk"))


def test_every_n_annotations_start_one_run(project):
    set_threshold(project, 3)
    annotate(project)
    annotate(project, was_cancelled=True)  # a skipped task is no annotation
    annotate(project)
    assert auto_runs(project) == []
    annotate(project)
    [run] = auto_runs(project)
    assert run.status == "queued" and run.started_by is None and run.queue_backend == "rq"

    for _ in range(3):  # while it is active no second run starts; these count towards the next one
        annotate(project)
    assert auto_runs(project) == [run]
    runs.cancel_run(run)
    annotate(project)  # the threshold is met since the last run: the next annotation starts one
    assert len(auto_runs(project)) == 2


def test_counting_starts_after_the_last_run_whatever_started_it(project):
    set_threshold(project, 2)
    annotate(project)
    manual, _ = runs.start_run(project, trigger=FineTuneRun.Trigger.BUTTON)
    runs.cancel_run(manual)
    annotate(project)
    assert auto_runs(project) == []
    annotate(project)
    assert len(auto_runs(project)) == 1


def test_unset_threshold_costs_one_query_and_starts_nothing(project):
    bare = make_project("retrain threshold, no config")
    with CaptureQueriesContext(connection) as queries:
        assert runs.check_retrain_threshold(bare.pk) is None
    assert len(queries) == 1
    annotate(project)
    config, _ = ProjectConfig.objects.get_or_create(project=project)  # settings saved, no threshold in them
    assert config.retrain_every is None
    with CaptureQueriesContext(connection) as queries:
        assert runs.check_retrain_threshold(project.pk) is None
    assert len(queries) == 1
    assert FineTuneRun.objects.filter(project__in=[project, bare]).count() == 0


def test_rolled_back_annotations_start_nothing(project):
    set_threshold(project, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        annotate(project)
        raise RuntimeError("the request failed after saving")
    assert auto_runs(project) == []


def test_a_failing_check_never_breaks_the_annotation_save(project, monkeypatch, caplog):
    set_threshold(project, 1)

    def broken(*args, **kwargs):
        raise RuntimeError("queue on fire")

    monkeypatch.setattr(runs, "start_run", broken)
    with caplog.at_level(logging.ERROR, logger="marker_ls_plugin.domain.runs"):
        annotation = annotate(project)
    assert Annotation.objects.filter(pk=annotation.pk).exists()
    assert "the retrain threshold check failed" in caplog.text and "queue on fire" in caplog.text


# Through a real server: Label Studio's own annotation API, and the plugin's settings API.


def test_label_studio_annotations_trigger_a_run(label_studio, http):
    url = label_studio.url
    project_id = http.post(f"{url}/api/projects/", json={"title": "auto retrain"}, timeout=30).json()["id"]
    response = http.patch(f"{url}/marker-ls/api/projects/{project_id}/ocr/", json={"retrain_every": 2}, timeout=30)
    assert response.status_code == 200 and response.json()["retrain_every"] == 2, response.text
    imported = http.post(f"{url}/api/projects/{project_id}/import", json=[{"text": "a"}, {"text": "b"}],
                         params={"return_task_ids": "true"}, timeout=30)
    first, second = imported.json()["task_ids"]

    def run_list():
        return http.get(f"{url}/marker-ls/api/projects/{project_id}/runs/", timeout=30).json()

    def annotate_task(task_id):
        response = http.post(f"{url}/api/tasks/{task_id}/annotations/", timeout=30,
                             json={"result": [], "was_cancelled": False, "project": project_id})
        assert response.status_code == 201, response.text

    annotate_task(first)
    assert run_list() == []
    annotate_task(second)
    [run] = wait_for(run_list, 30, message="an automatic run")
    assert run["trigger"] == "auto" and run["started_by"] is None
    # It executes like any run (the embedded executor; the test run function).
    wait_for(lambda: run_list()[0]["status"] == "succeeded", 60, message="the run to succeed")
