"""A project's OCR settings through the plugin's API: active model, pre-annotation, retrain threshold."""

from __future__ import annotations

import re
import time

import pytest
from mls_factories import make_project, make_user
from rest_framework.test import APIClient

from marker_ls_plugin.domain import activation, runs
from marker_ls_plugin.models import OCRModel, ProjectConfig


@pytest.fixture
def owner():
    return make_user()


@pytest.fixture
def project(owner):
    return make_project("ocr settings api", owner)


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def url(project) -> str:
    return f"/marker-ls/api/projects/{project.pk}/ocr/"


def test_get_shows_the_settings(owner, project):
    data = client_for(owner).get(url(project)).json()
    assert data["active_model"] is None and data["retrain_every"] is None and data["preannotate"] is True
    assert data["model_version"] == "marker-rapidocr-base"


def test_patch_changes_each_setting(owner, project):
    model = OCRModel.objects.create(name="api-activated", engine="rapidocr")
    client = client_for(owner)
    response = client.patch(url(project), {"active_model": model.pk, "retrain_every": 25}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["active_model"] == model.pk and data["model_version"] == "api-activated"
    assert data["retrain_every"] == 25 and data["preannotate"] is True
    config = ProjectConfig.objects.get(project=project)
    assert (config.active_model, config.retrain_every) == (model, 25)

    data = client.patch(url(project), {"preannotate": False, "retrain_every": None}, format="json").json()
    assert (data["preannotate"], data["retrain_every"], data["active_model"]) == (False, None, model.pk)
    data = client.patch(url(project), {"active_model": None}, format="json").json()
    assert data["active_model"] is None and data["model_version"] == "marker-rapidocr-base"


@pytest.mark.parametrize("body, field", [
    ({"active_model": 987654321}, "active_model"),
    ({"retrain_every": 0}, "retrain_every"),
    ({"retrain_every": "often"}, "retrain_every"),
    ({"retrain_evry": 5}, "retrain_evry"),
])
def test_patch_refuses_bad_values(owner, project, body, field):
    response = client_for(owner).patch(url(project), body, format="json")
    assert response.status_code == 400 and field in response.json()["validation_errors"], response.content
    assert not ProjectConfig.objects.filter(project=project).exclude(retrain_every=None).exists()


def test_other_organizations_and_anonymous_users_cannot_see_or_change(project):
    stranger = client_for(make_user())
    assert stranger.get(url(project)).status_code == 404
    assert stranger.patch(url(project), {"retrain_every": 1}, format="json").status_code == 404
    assert client_for(None).patch(url(project), {"retrain_every": 1}, format="json").status_code in (401, 403)
    assert not ProjectConfig.objects.filter(project=project, retrain_every=1).exists()


def test_activate_model_is_idempotent(project):
    model = OCRModel.objects.create(name="api-activate-twice", engine="rapidocr")
    assert activation.activate_model(project, model).active_model == model
    before = ProjectConfig.objects.get(project=project).updated_at
    activation.activate_model(project, model)
    assert ProjectConfig.objects.get(project=project).updated_at == before
    assert runs.active_model_for(project) == model


def test_admin_edits_the_settings_and_activates_through_runs(project, monkeypatch):
    from django.conf import settings
    from django.test import Client
    from users.models import User

    admin_user = User.objects.create_superuser(email=f"admin-{project.pk}@example.com", password="pw-for-tests")
    model = OCRModel.objects.create(name="admin-activated", engine="rapidocr")
    activated = []
    monkeypatch.setattr(activation, "activate_model", lambda p, m: activated.append((p.pk, m)) or
                        ProjectConfig.objects.filter(project=p).update(active_model=m))
    client = Client()
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session["last_login"] = time.time()  # Label Studio's session-timeout middleware logs out sessions without it
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key  # signed-cookie sessions: the key is the data
    page = f"/admin/marker_ls_plugin/ocrproject/{project.pk}/change/"
    response = client.get(page)
    assert response.status_code == 200 and b"retrain_every" in response.content
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.content).group(1).decode()
    prefix = "marker_ls_config"
    response = client.post(page, {
        "csrfmiddlewaretoken": token,  # checked although Label Studio's middleware turns CSRF off
        f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1", f"{prefix}-0-project": str(project.pk),
        f"{prefix}-0-active_model": str(model.pk), f"{prefix}-0-preannotate": "on", f"{prefix}-0-retrain_every": "40",
    })
    assert response.status_code == 302, response.content[-3000:]
    config = ProjectConfig.objects.get(project=project)
    assert activated == [(project.pk, model)]
    assert (config.active_model, config.retrain_every) == (model, 40)


def test_activation_repredicts_only_tasks_nobody_annotated(project, monkeypatch):
    from django.test import override_settings
    from tasks.models import Annotation, Task

    from marker_ls_plugin.domain import preannotation
    from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

    project.label_config = OCR_PRESET_CONFIG
    project.save()
    queued = []
    monkeypatch.setattr(preannotation, "schedule", lambda p, ids, **kw: queued.extend(ids) or len(ids))
    annotated, skipped, fresh = (Task.objects.create(project=project, data={"image": f"/data/{i}.png"})
                                 for i in range(3))
    Annotation.objects.create(task=annotated, project=project, result=[], completed_by=project.created_by)
    Annotation.objects.create(task=skipped, project=project, result=[], completed_by=project.created_by,
                              was_cancelled=True)
    queued.clear()  # whatever the creation hooks queued
    activation.activate_model(project, OCRModel.objects.create(name="repredict-new", engine="rapidocr"))
    assert sorted(queued) == sorted([skipped.pk, fresh.pk])  # a skipped task still needs annotating

    queued.clear()
    with override_settings(MARKER_LS={"REPREDICT_ON_ACTIVATE": False}):
        activation.activate_model(project, OCRModel.objects.create(name="repredict-off", engine="rapidocr"))
    assert queued == []
