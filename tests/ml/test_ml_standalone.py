"""`marker-ls ml-backend`: the same protocol as a separate service, reading images from Label Studio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import requests
from mls_helpers import clean_environ, free_port, import_rendered_page, stop_process, wait_for
from mls_stub_ml import StubBackend

from marker_ls_plugin.cli import build_parser
from marker_ls_plugin.ml.predictor import Predictor
from marker_ls_plugin.ml.protocol import handle
from marker_ls_plugin.ml.standalone import Service, newest_model
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

LINES = ["Standalone backend line one", "and line two 42"]


@pytest.fixture(scope="module")
def uploaded(label_studio, http):
    page = import_rendered_page(label_studio, http, "standalone", LINES)
    project, task_id, polygons = page["project"], page["task"], page["polygons"]
    task = http.get(f"{label_studio.url}/api/tasks/{task_id}", timeout=30).json()
    token = http.get(f"{label_studio.url}/api/current-user/token", timeout=30).json()["token"]
    return {"task": {"id": task_id, "data": task["data"]}, "token": token, "polygons": polygons,
            "project": project["id"], "size": page["size"]}


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


MALFORMED = [
    ([], "JSON object"),
    ({"tasks": [1]}, "'tasks' must be a list of task objects"),
    ({"tasks": {"id": 1}}, "'tasks' must be a list"),
    ({"tasks": [{"id": 1, "data": "x"}]}, "'data' must be an object"),
    ({"tasks": [{"id": 1, "data": {}}], "params": {"context": {"result": [
        {"id": "r", "type": "rectanglelabels", "value": {"x": "a", "y": 1, "width": 1, "height": 1}}]}}},
     "value 'x' must be a number"),
    ({"tasks": [{"id": 1, "data": {}}], "params": {"context": {"result": [
        {"id": "r", "type": "polygonlabels", "value": {"points": [[1, 2]]}}]}}}, "'points'"),
    ({"tasks": [{"id": 1, "data": {}}], "params": {"context": "all"}}, "'params.context'"),
    ({"tasks": [], "label_config": 5}, "'label_config' must be a string"),
    ({"tasks": [], "params": []}, "'params' must be an object"),
    ({"tasks": [], "params": {"context": {"result": {}}}}, "'params.context'"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_predict_requests_answer_400_naming_the_part(backend, body, message):
    response = requests.post(f"{backend}/predict", timeout=30, auth=("ls", "secret"), json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_the_image_is_the_labeling_configs_image_field(backend, uploaded):
    """Not the first string of the task's data: a caption before the image must not be taken for it."""
    config = OCR_PRESET_CONFIG.replace('value="$image"', 'value="$page"')
    task = {"id": uploaded["task"]["id"], "data": {"caption": "/data/upload/0/not-the-page.png",
                                                  "page": uploaded["task"]["data"]["image"]}}
    response = requests.post(f"{backend}/predict", timeout=120, auth=("ls", "secret"), json={
        "tasks": [task], "label_config": config, "project": "1.0", "params": {}})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["results"]
    assert [i["value"]["text"][0] for i in prediction["result"] if i["type"] == "textarea"] == LINES


def test_images_come_only_from_the_configured_label_studio(backend, uploaded):
    """A /setup naming another host, and task URLs on it, never make the backend fetch from there or send the key."""
    auth = ("ls", "secret")
    with StubBackend() as elsewhere:
        setup = requests.post(f"{backend}/setup", timeout=30, auth=auth, json={
            "project": "7.0", "schema": OCR_PRESET_CONFIG, "hostname": elsewhere.url, "access_token": "stolen?"})
        assert setup.status_code == 200, setup.text
        response = requests.post(f"{backend}/predict", timeout=120, auth=auth, json={
            "tasks": [uploaded["task"], {"id": 2, "data": {"image": f"{elsewhere.url}/page.png"}},
                      {"id": 3, "data": {"image": "http://169.254.169.254/latest/meta-data/"}},
                      {"id": 4, "data": {"image": "file:///etc/passwd"}}],
            "label_config": OCR_PRESET_CONFIG, "project": "7.0", "params": {}})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results[0]["result"]) == 2 * len(LINES)  # read from the configured Label Studio
        assert results[1:] == [[], [], []]
        assert elsewhere.calls == []


def test_without_credentials_it_listens_on_loopback_only(tmp_path):
    command = [sys.executable, "-m", "marker_ls_plugin.cli", "ml-backend", "--engine", "rapidocr",
               "--port", str(free_port())]
    refused = subprocess.run([*command, "--host", "0.0.0.0"], env=clean_environ(), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2
    assert "--basic-auth USER:PASSWORD" in refused.stderr and "0.0.0.0" in refused.stderr
    proc = subprocess.Popen(command, env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert "on http://127.0.0.1:" in line, line
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_surya):
    """Two recognition checkpoints in a models directory, as the training job or a user leaves them."""
    root = tmp_path_factory.mktemp("models")
    recognition = root / "models" / "recognition"
    for name in ("model-a", "model-b"):
        shutil.copytree(tiny_surya["recognition"], recognition / name)
    (recognition / "model-a" / "marker_ls_model.json").write_text(json.dumps({"name": "ocr-project-3-run-9"}))
    for index, name in enumerate(("model-a", "model-b")):
        os.utime(recognition / name, (1_000_000 + index, 1_000_000 + index))  # model-b is the newest
    return {"models": root / "models", "detection": tiny_surya["detection"]}


def test_each_project_gets_the_model_label_studio_asks_for(model_dirs):
    args = build_parser().parse_args(["ml-backend", "--models-dir", str(model_dirs["models"])])
    default = newest_model(args.models_dir)
    assert default.name == "model-b"
    service = Service(Predictor("model-b", "surya", {"recognition_checkpoint": str(default)}), None, None,
                      models_dir=args.models_dir)
    assert service.versions() == ["model-b", "ocr-project-3-run-9"]
    loaders = (service.load_image, service.load_engine)
    assert handle("POST", "/setup", {"project": "1.0", "model_version": "ocr-project-3-run-9"}, service.setup,
                  *loaders) == (200, {"model_version": "ocr-project-3-run-9"})
    assert handle("POST", "/setup", {"project": "2.0", "extra_params": {"model_version": "model-b"}},
                  service.setup, *loaders) == (200, {"model_version": "model-b"})
    assert handle("POST", "/setup", {"project": "3.0"}, service.setup, *loaders)[1] == {
        "model_version": "model-b"}
    status, body = handle("POST", "/setup", {"project": "4.0", "model_version": "nope"}, service.setup, *loaders)
    assert status == 400 and "unknown model_version 'nope'" in body["detail"] and "model-b" in body["detail"]
    first = service.predictor_for({"project": "1.0"})
    assert first.version == "ocr-project-3-run-9"
    assert first.options["recognition_checkpoint"] == str(model_dirs["models"] / "recognition" / "model-a")
    assert service.predictor_for({"project": "2.0"}).options["recognition_checkpoint"] == str(default)
    assert service.predictor_for({"project": "5.0"}) is service.predictor  # never set up: the default


def test_interactive_reads_the_region_just_drawn_not_the_first_predicted_one(backend, uploaded):
    """Label Studio sends every region of the annotation as context, the predicted ones first."""
    width, height = uploaded["size"]

    def region(index: int, region_id: str, origin: str) -> dict:
        xs, ys = zip(*uploaded["polygons"][index], strict=True)
        return {"id": region_id, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                "origin": origin, "original_width": width, "original_height": height,
                "value": {"x": min(xs) / width * 100, "y": min(ys) / height * 100,
                          "width": (max(xs) - min(xs)) / width * 100, "height": (max(ys) - min(ys)) / height * 100,
                          "rotation": 0, "rectanglelabels": ["Text"]}}

    predicted = region(1, "pred-1", "prediction")
    predicted_text = {**predicted, "from_name": "transcription", "type": "textarea",
                      "value": {**predicted["value"], "text": [LINES[1]]}}
    drawn = region(0, "drawn-1", "manual")
    response = requests.post(f"{backend}/predict", timeout=60, auth=("ls", "secret"), json={
        "tasks": [uploaded["task"]], "label_config": OCR_PRESET_CONFIG,
        "params": {"context": {"result": [predicted, predicted_text, drawn]}}})
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    texts = [(i["id"], i["value"]["text"]) for i in result["result"] if i["type"] == "textarea"]
    assert texts == [("drawn-1", [LINES[0]])]
