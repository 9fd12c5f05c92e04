"""`marker-ls ml-backend`: the same protocol as a separate service, reading images from Label Studio."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import requests
from mls_helpers import clean_environ, free_port, stop_process, wait_for
from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

LINES = ["Standalone backend line one", "and line two 42"]


@pytest.fixture(scope="module")
def uploaded(label_studio):
    http = label_studio.session()
    image, polygons = render_page(LINES, size=(900, 240), font_size=30)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    project = http.post(f"{label_studio.url}/api/projects/", timeout=30,
                        json={"title": "standalone", "label_config": OCR_PRESET_CONFIG}).json()
    response = http.post(f"{label_studio.url}/api/projects/{project['id']}/import", timeout=60,
                         files={"file": ("page.png", buffer.getvalue(), "image/png")},
                         params={"return_task_ids": "true"})
    [task_id] = response.json()["task_ids"]
    task = http.get(f"{label_studio.url}/api/tasks/{task_id}", timeout=30).json()
    token = http.get(f"{label_studio.url}/api/current-user/token", timeout=30).json()["token"]
    return {"task": {"id": task_id, "data": task["data"]}, "token": token, "polygons": polygons,
            "project": project["id"],
            "size": image.size}


@pytest.fixture(scope="module")
def backend(label_studio, uploaded, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("ml") / "backend.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "marker_ls_plugin.cli", "ml-backend", "--port", str(port), "--host", "127.0.0.1",
         "--engine", "rapidocr", "--label-studio-url", label_studio.url, "--api-key", uploaded["token"],
         "--basic-auth", "ls:secret"],
        env=clean_environ(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, open(log.name).read()
            try:
                return requests.get(f"{url}/health", timeout=2, auth=("ls", "secret")).ok
            except requests.ConnectionError:
                return False

        wait_for(up, 60, message="the standalone backend")
        yield url
    finally:
        stop_process(proc)


def test_it_needs_its_credentials(backend):
    assert requests.get(f"{backend}/health", timeout=10).status_code == 401
    assert requests.get(f"{backend}/health", timeout=10, auth=("ls", "secret")).json()["status"] == "UP"


def test_setup_and_predict_a_page(backend, uploaded):
    auth = ("ls", "secret")
    setup = requests.post(f"{backend}/setup", timeout=30, auth=auth, json={"project": "1.0", "schema": ""})
    assert setup.json() == {"model_version": "marker-rapidocr-base"}
    response = requests.post(f"{backend}/predict", timeout=120, auth=auth, json={
        "tasks": [uploaded["task"]], "label_config": OCR_PRESET_CONFIG, "project": "1.0", "params": {}})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["results"]
    texts = [item["value"]["text"][0] for item in prediction["result"] if item["type"] == "textarea"]
    assert texts == LINES and prediction["model_version"] == "marker-rapidocr-base"


def test_interactive_region_and_bad_input(backend, uploaded):
    auth = ("ls", "secret")
    width, height = uploaded["size"]
    xs, ys = zip(*uploaded["polygons"][0], strict=True)
    region = {"id": "r1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
              "original_width": width, "original_height": height,
              "value": {"x": min(xs) / width * 100, "y": min(ys) / height * 100,
                        "width": (max(xs) - min(xs)) / width * 100, "height": (max(ys) - min(ys)) / height * 100,
                        "rotation": 0, "rectanglelabels": ["Text"]}}
    response = requests.post(f"{backend}/predict", timeout=60, auth=auth, json={
        "tasks": [uploaded["task"]], "label_config": OCR_PRESET_CONFIG, "params": {"context": {"result": [region]}}})
    [result] = response.json()["results"]
    assert [i["value"]["text"] for i in result["result"] if i["type"] == "textarea"] == [[LINES[0]]]
    missing = {"id": 999999, "data": {"image": "/data/upload/0/missing.png"}}
    response = requests.post(f"{backend}/predict", timeout=60, auth=auth, json={
        "tasks": [missing, uploaded["task"]], "label_config": OCR_PRESET_CONFIG, "params": {}})
    results = response.json()["results"]
    assert results[0] == [] and len(results[1]["result"]) == 2 * len(LINES)  # the batch went on
    not_ocr = requests.post(f"{backend}/predict", timeout=60, auth=auth, json={
        "tasks": [uploaded["task"]], "label_config": "<View><Text name='t' value='$t'/></View>", "params": {}})
    assert not_ocr.status_code == 400 and "Image" in not_ocr.json()["detail"]


def test_the_servers_own_http_endpoints_serve_the_protocol_behind_basic_auth(label_studio, uploaded):
    base = f"{label_studio.url}/marker-ls/ml"
    assert requests.get(f"{base}/health", timeout=10).status_code == 401
    assert requests.get(f"{base}/health", timeout=10, auth=("ml-user", "wrong")).status_code == 401
    auth = ("ml-user", "ml-secret")
    assert requests.get(f"{base}/health", timeout=10, auth=auth).json()["status"] == "UP"
    project = f"{uploaded['project']}.0"
    assert requests.post(f"{base}/setup", timeout=10, auth=auth, json={"project": project}).json() == {
        "model_version": "marker-rapidocr-base"}
    response = requests.post(f"{base}/predict", timeout=120, auth=auth, json={
        "tasks": [uploaded["task"]], "label_config": OCR_PRESET_CONFIG, "project": project, "params": {}})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["results"]
    assert [i["value"]["text"][0] for i in prediction["result"] if i["type"] == "textarea"] == LINES
    other = requests.post(f"{base}/predict", timeout=60, auth=auth, json={
        "tasks": [{"id": uploaded["task"]["id"], "data": {}}], "label_config": OCR_PRESET_CONFIG,
        "project": "999999.0", "params": {}})
    assert other.status_code == 404  # a task is only read through its own project
