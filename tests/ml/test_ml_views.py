"""The HTTP ML protocol under /marker-ls/ml/: per-project credentials reach their project only, the administrator's
credential reaches every project, and malformed bodies answer 400 with a message (never 500)."""

from __future__ import annotations

import base64
import json

import pytest
from django.conf import settings
from django.test import Client, override_settings
from mls_factories import make_user
from tasks.models import Task

from marker_ls_plugin.domain.first_start import create_ocr_project
from marker_ls_plugin.models import FineTuneRun, ProjectConfig
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

ADMIN = ("ml-admin", "ml-admin-secret")


def auth(username: str, password: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def own(project) -> dict:
    return auth(f"project-{project.pk}", ProjectConfig.objects.get(project=project).ml_token)


def post(route: str, body, headers: dict, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body)
    return Client().post(f"/marker-ls/ml/{route}", data, content_type="application/json", **headers)


@pytest.fixture(scope="module")
def projects():
    mine, theirs = make_user(), make_user()
    first = create_ocr_project(mine, "ml views first")
    second = create_ocr_project(theirs, "ml views second, another organization's")
    for project in (first, second):
        ProjectConfig.objects.filter(project=project).update(preannotate=False)
    [task] = Task.objects.bulk_create([Task(project=first, data={"image": "/data/upload/1/none.png"})])
    return {"first": first, "second": second, "task": task}


def marker_ls(**changes) -> dict:
    """The session's MARKER_LS settings (Redis, run function...) with ``changes``."""
    return {**getattr(settings, "MARKER_LS", {}), **changes}


@pytest.fixture(autouse=True)
def administrator_credential():
    with override_settings(MARKER_LS=marker_ls(ML_BACKEND_BASIC_AUTH=":".join(ADMIN))):
        yield


def region(**value) -> dict:
    return {"id": "r1", "original_width": 100, "original_height": 50, "value": value}


MALFORMED = [
    ("setup", "[]", "JSON object"),
    ("predict", "[]", "JSON object"),
    ("webhook", "[]", "JSON object"),
    ("train", "[]", "JSON object"),
    ("setup", {"project": "abc"}, "'project' must be a project id"),
    ("setup", {"project": None}, "'project' must be a project id"),
    ("setup", {"project": True}, "'project' must be a project id"),
    ("train", {"project": "abc"}, "'project' must be a project id"),
    ("predict", {"project": "abc", "tasks": []}, "'project' must be a project id"),
    ("predict", {"project": "{first}", "tasks": [1]}, "'tasks' must be a list of task objects"),
    ("predict", {"project": "{first}", "tasks": {"id": 1}}, "'tasks' must be a list of task objects"),
    ("predict", {"project": "{first}", "tasks": [{"id": "1"}]}, "integer 'id'"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "params": ["x"]}, "'params' must be an object"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "label_config": 5}, "'label_config'"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}", "data": "x"}]}, "'data' must be an object"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "params": {"context": {"result": {"x": 1}}}},
     "'params.context' must be an object whose 'result' is a list"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "label_config": OCR_PRESET_CONFIG,
                 "params": {"context": {"result": [region(x="a", y=1, width=2, height=3)]}}},
     "value 'x' must be a number"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "label_config": OCR_PRESET_CONFIG,
                 "params": {"context": {"result": [region(points=[[1, "b"]])]}}}, "'points' must be a list"),
    ("predict", {"project": "{first}", "tasks": [{"id": "{task}"}], "label_config": OCR_PRESET_CONFIG,
                 "params": {"context": {"result": ["not a region"]}}}, "each context region"),
    ("webhook", {"action": "START_TRAINING", "project": 5}, "'project' must be the project object"),
    ("webhook", {"action": "START_TRAINING", "project": "abc"}, "'project' must be the project object"),
    ("webhook", {"action": "START_TRAINING", "project": [1]}, "'project' must be the project object"),
    ("webhook", {"action": "START_TRAINING", "project": {"id": "abc"}}, "'project' must be a project id"),
    ("webhook", {"action": "TASKS_CREATED", "project": {"id": "{first}"}, "tasks": "all"}, "'tasks' must be a list"),
]


def fill(body, projects):
    """The body with "{first}" and "{task}" replaced by the ids of this session's rows (ints stay ints)."""
    if isinstance(body, str):
        return body.replace("{first}", str(projects["first"].pk)).replace("{task}", str(projects["task"].pk))
    text = json.dumps(body).replace('"{first}"', str(projects["first"].pk)).replace('"{task}"',
                                                                                   str(projects["task"].pk))
    return json.loads(text)


@pytest.mark.parametrize("route, body, message", MALFORMED)
def test_malformed_bodies_answer_400_with_a_message(projects, route, body, message):
    runs_before = FineTuneRun.objects.filter(project=projects["first"]).count()
    for headers in (auth(*ADMIN), own(projects["first"])):
        raw = fill(body, projects).encode() if isinstance(body, str) else None
        response = post(route, fill(body, projects), headers, raw=raw)
        assert response.status_code == 400, response.content
        assert message in response.json()["detail"], response.json()
    assert FineTuneRun.objects.filter(project=projects["first"]).count() == runs_before


def test_a_body_that_is_not_json_is_a_400(projects):
    response = post("setup", None, auth(*ADMIN), raw=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["detail"]


def test_a_project_credential_reaches_its_own_project_only(projects):
    first, second = projects["first"], projects["second"]
    credential = own(first)
    assert post("setup", {"project": f"{first.pk}.0"}, credential).status_code == 200
    for route, body in (("setup", {"project": f"{second.pk}.0"}),
                        ("predict", {"project": f"{second.pk}.0", "tasks": []}),
                        ("train", {"project": f"{second.pk}.0"}),
                        ("webhook", {"action": "START_TRAINING", "project": {"id": second.pk}}),
                        ("setup", {"project": "999999999.0"})):
        response = post(route, body, credential)
        assert response.status_code == 403, (route, response.content)
        assert str(second.pk) not in response.json()["detail"] and second.title not in response.content.decode()
    assert not FineTuneRun.objects.filter(project=second).exists()
    # the other project's user name with this project's password is no credential at all
    borrowed = auth(f"project-{second.pk}", ProjectConfig.objects.get(project=first).ml_token)
    assert post("setup", {"project": f"{second.pk}.0"}, borrowed).status_code == 401
    assert post("setup", {"project": f"{first.pk}.0"}, auth(f"project-{first.pk}", "wrong")).status_code == 401


def test_a_project_credential_starts_training_of_its_project(projects, redis_url):
    from marker_ls_plugin.domain import runs

    first = projects["first"]
    response = post("webhook", {"action": "START_TRAINING", "project": {"id": first.pk}}, own(first))
    assert response.status_code == 201, response.content
    run = FineTuneRun.objects.get(pk=int(response.json()["job"]))
    assert run.project_id == first.pk and run.trigger == FineTuneRun.Trigger.LABEL_STUDIO
    runs.cancel_run(run)


def test_the_administrator_credential_reaches_every_project(projects):
    for project in (projects["first"], projects["second"]):
        response = post("setup", {"project": f"{project.pk}.0"}, auth(*ADMIN))
        assert response.status_code == 200 and response.json()["model_version"]
    assert post("setup", {"project": "999999999.0"}, auth(*ADMIN)).status_code == 404


def test_without_any_credential_it_says_which_to_use(projects):
    with override_settings(MARKER_LS=marker_ls(ML_BACKEND_BASIC_AUTH=None)):
        response = Client().get("/marker-ls/ml/health")
        assert response.status_code == 403 and "project-<id>" in response.json()["detail"]
        assert Client().get("/marker-ls/ml/health", **own(projects["first"])).json()["status"] == "UP"
    assert Client().get("/marker-ls/ml/health").status_code == 401
