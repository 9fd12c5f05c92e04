"""Bad training arguments and settings over HTTP: a 400 or a form error naming the argument, never a run or a 500."""

from __future__ import annotations

import html
import re

import pytest

# The values a probe of the API accepted (or answered with a Python error) before arguments were checked.
BAD_CONFIGS = [
    ({"learning_rate": "abc"}, "learning_rate"),
    ({"freeze": "vision_encoder"}, "freeze"),
    ({"per_device_train_batch_size": 2.5}, "per_device_train_batch_size"),
    ({"seed": "x"}, "seed"),
    ({"num_train_epochs": 1e308}, "num_train_epochs"),
    ({"max_steps": 1e20}, "max_steps"),
    ({"labels": "Text"}, "labels"),
    ({"max_steps": True}, "max_steps"),
    ({"max_grad_norm": -1}, "max_grad_norm"),
    ({"per_device_train_batch_size": 1e9}, "per_device_train_batch_size"),
    ({"per_device_train_batch_size": 10**9}, "per_device_train_batch_size"),
]


@pytest.fixture
def project_id(label_studio, http):
    response = http.post(f"{label_studio.url}/api/projects/", json={"title": "training arguments"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def runs_of(label_studio, http, project_id) -> list:
    return http.get(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/", timeout=30).json()


@pytest.mark.parametrize(("config", "argument"), BAD_CONFIGS)
def test_api_answers_400_naming_the_argument(label_studio, http, project_id, config, argument):
    response = http.post(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/", json={"config": config},
                         timeout=30)
    assert response.status_code == 400, response.text
    messages = response.json()["validation_errors"]["config"]
    assert any(message.startswith(f"{argument} ") for message in messages), messages
    assert runs_of(label_studio, http, project_id) == []


def test_api_names_every_bad_argument_at_once(label_studio, http, project_id):
    response = http.post(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/", timeout=30,
                         json={"config": {"seed": -1, "warmup_ratio": 1, "freeze": ["encoder"]}})
    assert response.status_code == 400, response.text
    messages = response.json()["validation_errors"]["config"]
    assert sorted(message.split(" ", 1)[0] for message in messages) == ["freeze", "seed", "warmup_ratio"]
    assert runs_of(label_studio, http, project_id) == []


def admin_add_run(label_studio, http, project_id, config: str):
    url = f"{label_studio.url}/admin/marker_ls_plugin/finetunerun/add/"
    page = http.get(url, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return http.post(url, timeout=30, headers={"Referer": url}, allow_redirects=False,
                     data={"csrfmiddlewaretoken": token, "project": str(project_id), "config": config})


@pytest.mark.parametrize(("config", "argument"), [
    ('{"learning_rate": "abc"}', "learning_rate"),
    ('{"max_steps": true}', "max_steps"),
    ('{"learning_rate": NaN}', "learning_rate"),  # Python's JSON reader takes NaN; PostgreSQL's jsonb does not
    ('{"freeze": "vision_encoder"}', "freeze"),
    ('{"max_grad_norm": -1}', "max_grad_norm"),
    ('["not", "an", "object"]', "training arguments"),
])
def test_admin_add_form_shows_the_error_and_starts_nothing(label_studio, http, project_id, config, argument):
    response = admin_add_run(label_studio, http, project_id, config)
    assert response.status_code == 200, (response.status_code, response.text[-2000:])
    errors = re.search(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.text, re.S)
    assert errors and f"{argument} must be" in html.unescape(errors.group(1)), response.text[-3000:]
    assert runs_of(label_studio, http, project_id) == []


@pytest.mark.parametrize("value", [99999999999999999999, 2**31])
def test_retrain_every_out_of_range_is_a_400(label_studio, http, project_id, value):
    url = f"{label_studio.url}/marker-ls/api/projects/{project_id}/ocr/"
    response = http.patch(url, json={"retrain_every": value}, timeout=30)
    assert response.status_code == 400, response.text
    assert "retrain_every" in response.json()["validation_errors"], response.text
    assert http.get(url, timeout=30).json()["retrain_every"] is None
    assert http.patch(url, json={"retrain_every": 2**31 - 1}, timeout=30).json()["retrain_every"] == 2**31 - 1
    assert http.patch(url, json={"retrain_every": None}, timeout=30).status_code == 200
