"""GET requests change nothing, and every plugin page escapes what users, annotators and workers wrote.

The views are called with a request (Label Studio's signed-cookie sessions make Django's test client log-in
unusable here); the rows include runs the reaper would fail, so a GET that reaps shows up as a change.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import RequestFactory
from django.utils import timezone
from mls_factories import make_project, make_user

from marker_ls_plugin.models import FineTuneRun, OCRModel, OCRProject, ProjectConfig
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.web import api, pages

HTML = '<img src=x onerror="alert(1)">'
ESCAPED = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
METRICS = {"before": {"cer": 0.4, "wer": 0.5, "exact": 0.1, "lines": 2, "per_label": {HTML: {"cer": 0.4}}},
           "after": {"cer": 0.2, "wer": 0.3, "exact": 0.5, "lines": 2, "per_label": {HTML: {"cer": 0.2}}},
           "worst_lines": [{"key": "1:r1", "label": HTML, "reference": HTML, "before": HTML, "after": HTML,
                            "cer_before": 1.0, "cer_after": 0.5}], "base_checkpoint": HTML}


@pytest.fixture(scope="module")
def scene():
    """An administrator's organization: runs the reaper would fail, and names, errors and logs holding HTML."""
    user = make_user()
    user.is_staff = user.is_superuser = True
    user.save()
    old = timezone.now() - timedelta(hours=1)
    projects = []
    for kind in ("dead worker", "stopped server", "lost job", "finished"):
        project = make_project(f"{HTML} {kind}", user)
        project.label_config = OCR_PRESET_CONFIG
        project.save()
        ProjectConfig.objects.update_or_create(project=project, defaults={"engine_error": f"{HTML} engine",
                                                                         "retrain_every": 5})
        projects.append(project)
    runs = [
        FineTuneRun.objects.create(project=projects[0], status="running", heartbeat_at=old, queue_backend="rq",
                                   job_id="get-test-dead", log_tail=f"{HTML} log"),
        FineTuneRun.objects.create(project=projects[1], queue_backend="embedded", job_id="embedded:999999:get"),
        FineTuneRun.objects.create(project=projects[2], queue_backend="rq", job_id="marker-ls-run-get-test-lost"),
        FineTuneRun.objects.create(project=projects[3], status="failed", error=f"{HTML} error",
                                   log_tail=f"{HTML} log", queue_backend="rq", job_id="get-test-failed"),
        FineTuneRun.objects.create(project=projects[3], status="succeeded", queue_backend="rq", job_id="get-test-ok",
                                   log_tail=f"{HTML} log", metrics=[{"step": 1, "loss": 1.0}]),
    ]
    FineTuneRun.objects.filter(pk__in=[run.pk for run in runs]).update(created_at=old)
    projects.append(make_project(f"{HTML} never configured", user))  # no settings row of the plugin's yet
    model = OCRModel.objects.create(name=f"get-test-{runs[-1].pk}", kind="finetuned", description=HTML,
                                    checkpoint=f"/models/{HTML}", produced_by_run=runs[-1], metrics=METRICS,
                                    **({"organization": user.active_organization}
                                       if any(f.name == "organization" for f in OCRModel._meta.fields) else {}))
    ProjectConfig.objects.filter(project=projects[3]).update(active_model=model)
    return {"user": user, "projects": projects, "runs": runs, "model": model}


def snapshot() -> dict:
    """Every row of the plugin's tables, and of Label Studio's that the plugin writes."""
    tables = [*apps.get_app_config("marker_ls_plugin").get_models(), apps.get_model("tasks", "Prediction"),
              apps.get_model("ml", "MLBackend")]
    return {model._meta.label: list(model._base_manager.order_by("pk").values()) for model in tables}


def get(user, view, *args, **kwargs):
    request = RequestFactory().get("/")
    request.user = user
    response = view(request, *args, **kwargs)
    if hasattr(response, "render"):
        response.render()
    assert response.status_code == 200, (view, args, kwargs, response.status_code)
    return response.content.decode()


def every_get(scene) -> dict[str, str]:
    """Every plugin page, API GET and admin page for the scene's rows; their bodies by name."""
    user, projects, runs, model = scene["user"], scene["projects"], scene["runs"], scene["model"]
    bodies = {"dashboard": get(user, pages.dashboard)}
    for run in runs:
        bodies[f"run page {run.pk}"] = get(user, pages.run_detail, run.pk)
        bodies[f"run api {run.pk}"] = get(user, api.RunAPI.as_view(), pk=run.pk)
    for project in projects:
        bodies[f"runs api {project.pk}"] = get(user, api.ProjectRunsAPI.as_view(), project_pk=project.pk)
        bodies[f"ocr api {project.pk}"] = get(user, api.ProjectOCRAPI.as_view(), project_pk=project.pk)
        bodies[f"project page {project.pk}"] = get(user, pages.project_page, project.pk)
    for model_class, objects in ((FineTuneRun, runs), (OCRModel, [model]), (OCRProject, projects)):
        model_admin = admin.site._registry[model_class]
        name = model_class._meta.model_name
        bodies[f"admin {name} list"] = get(user, model_admin.changelist_view)
        for obj in objects:
            bodies[f"admin {name} {obj.pk}"] = get(user, model_admin.change_view, str(obj.pk))
    return bodies


def test_get_requests_change_nothing_even_with_runs_to_reap(scene):
    before = snapshot()
    every_get(scene)
    after = snapshot()
    assert after == before  # not even a settings row with defaults: reads show the defaults unsaved
    every_get(scene)
    assert snapshot() == after
    # The rows were worth reaping: the periodic reaper (not a GET) fails them.
    from marker_ls_plugin.domain.runs import reap_stale_runs

    reaped = set()
    for project in scene["projects"][:3]:
        reaped |= {run.pk for run in reap_stale_runs(project=project)}
    assert reaped == {run.pk for run in scene["runs"][:3]}


def test_every_page_escapes_names_errors_and_log_tails(scene):
    pages = {name: body for name, body in every_get(scene).items() if "api" not in name.split()}
    assert all(HTML not in body for body in pages.values()), [name for name, body in pages.items() if HTML in body]
    shown = {name for name, body in pages.items() if ESCAPED in body}
    # Every page shows some of it, escaped; the model list's columns are slugs, names and numbers only.
    assert shown == set(pages) - {"admin ocrmodel list"}, sorted(set(pages) - shown)
    failed, succeeded = scene["runs"][3:]
    assert f"{ESCAPED} error" in pages[f"run page {failed.pk}"]
    assert f"{ESCAPED} log" in pages[f"run page {succeeded.pk}"]
    assert pages[f"run page {succeeded.pk}"].count(ESCAPED) >= 5  # worst lines, per-label rows, base checkpoint
    assert f"{ESCAPED} engine" in pages["dashboard"]
