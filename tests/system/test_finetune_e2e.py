"""Fine-tuning end to end: a real Label Studio server on PostgreSQL, Redis, an RQ worker, tiny real surya models.

Annotations go in through Label Studio's API in the editor's format; Retrain goes through the plugin's API; the
worker exports, trains, evaluates, saves, registers and activates; the next predictions carry the new model.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mls_helpers import CI, ROOT, LabelStudio, free_port, stop_process, wait_for
from mls_lines import TEXTS
from mls_render import render_page

from marker_ls_plugin.domain.registry import register_model_dir  # the test database is the server's
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.ocr.results import rectangle_value

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("redis_url")]
FONT_SIZES = (22, 24, 26, 28, 30, 32)
TRAINING = {"max_steps": 150, "learning_rate": 3e-3, "per_device_train_batch_size": 8, "eval_steps": 50,
            "freeze": [], "val_fraction": 0.25, "early_stopping_patience": None, "mixed_precision": "no"}


class Server(LabelStudio):
    email = "e2e-admin@example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, tiny_surya):
    """Label Studio (PostgreSQL, RQ on Redis, surya engine with tiny models) and one worker on both queues."""
    if "POSTGRE_NAME" not in os.environ:  # conftest points the tests at PostgreSQL when it is there
        message = "the end-to-end fine-tuning test runs on PostgreSQL"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ)
    env.update({
        "LABEL_STUDIO_USERNAME": Server.email, "LABEL_STUDIO_PASSWORD": Server.password,
        "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
        "MARKER_LS_REDIS_URL": redis_url,
        # Queues of its own: other tests' jobs on the shared test Redis must not reach this worker.
        "MARKER_LS_TRAINING_QUEUE": "e2e_training", "MARKER_LS_INFERENCE_QUEUE": "e2e_inference",
        "MARKER_LS_RUN_FUNCTION": "marker_ls_plugin.domain.finetune.run_finetune",
        "MARKER_LS_MODELS_DIR": str(root / "models"),
        "MARKER_LS_ENGINE": "surya", "MARKER_LS_TORCH_DEVICE": "cpu",
        "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT": str(tiny_surya["recognition"]),
        "MARKER_LS_SURYA_DETECTION_CHECKPOINT": str(tiny_surya["detection"]),
    })
    port = free_port()
    log = open(root / "server.log", "w")
    server_proc = subprocess.Popen(
        [sys.executable, "-m", "marker_ls_plugin.cli", "start", "--port", str(port), "--host", "127.0.0.1",
         "--no-demo"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", server_proc, root / "server.log", root / "data")
    workers = []

    def start_worker():
        worker_log = open(root / f"worker-{len(workers)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "marker_ls_plugin.cli", "worker", "e2e_training",
                                 "e2e_inference"], env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = worker_log.name
        workers.append(proc)
        return proc

    try:
        server.wait_until_up()
        server.start_worker, server.workers, server.models_dir = start_worker, workers, root / "models"
        server.tiny_recognition = tiny_surya["recognition"]
        start_worker()
        yield server
    finally:
        for proc in workers:
            stop_process(proc)
        stop_process(server_proc)


@pytest.fixture(scope="module")
def http(stack):
    return stack.session()


def annotated_project(stack, http, title: str) -> tuple[int, list[int]]:
    """A new OCR project of six rendered pages, each corrected by an annotator via the API: (project, tasks)."""
    response = http.post(f"{stack.url}/api/projects/", json={"title": title, "label_config": OCR_PRESET_CONFIG},
                         timeout=30)
    assert response.status_code == 201, response.text
    project_id = response.json()["id"]
    annotated_tasks = []
    for size in FONT_SIZES:
        image, polygons = render_page(TEXTS, size=(480, int(80 + len(TEXTS) * size * 1.9)), font_size=size)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        response = http.post(f"{stack.url}/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                             files={f"page{size}": (f"page{size}.png", buffer.getvalue(), "image/png")}, timeout=60)
        assert response.status_code == 201, response.text
        [task_id] = response.json()["task_ids"]
        annotated_tasks.append(task_id)
        result = []
        for i, (text, polygon) in enumerate(zip(TEXTS, polygons, strict=True)):
            common = {"id": f"s{size}l{i}", "to_name": "image", "original_width": image.width,
                      "original_height": image.height, "image_rotation": 0, "origin": "manual"}
            geometry = rectangle_value(polygon, image.width, image.height)
            result += [{**common, "from_name": "label", "type": "rectanglelabels",
                        "value": {**geometry, "rectanglelabels": ["Text"]}},
                       {**common, "from_name": "transcription", "type": "textarea",
                        "value": {**geometry, "text": [text]}}]
        response = http.post(f"{stack.url}/api/tasks/{task_id}/annotations/", json={"result": result}, timeout=30)
        assert response.status_code == 201, response.text
    return project_id, annotated_tasks


def get_run(stack, http, run_id):
    response = http.get(f"{stack.url}/marker-ls/api/runs/{run_id}/", timeout=30)
    assert response.ok, response.text
    return response.json()


def wait_run(stack, http, run_id, statuses, timeout):
    def done():
        run = get_run(stack, http, run_id)
        return run if run["status"] in statuses else None

    return wait_for(done, timeout, interval=1, message=f"run {run_id} to be {statuses}: "
                                                         f"{Path(stack.workers[-1].log_path).read_text()[-3000:]}")


def start(stack, http, project, config):
    response = http.post(f"{stack.url}/marker-ls/api/projects/{project}/runs/", json={"config": config}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_retrain_trains_registers_activates_and_repredicts(stack, http):
    project, annotated_tasks = annotated_project(stack, http, "e2e retrain")  # its own: no state from another test
    ocr = http.get(f"{stack.url}/marker-ls/api/projects/{project}/ocr/", timeout=30).json()
    assert ocr["engine"] == "surya" and ocr["active_model"] is None
    base_version = ocr["model_version"]

    run_id = start(stack, http, project, TRAINING)
    run = wait_run(stack, http, run_id, {"succeeded", "failed", "cancelled"}, timeout=600)
    assert run["status"] == "succeeded", (run["error"], run["log_tail"])

    # progress, the dataset snapshot, and metrics before and after on the same validation lines
    assert run["step"] == run["total_steps"] == 150 and run["progress"] == 1.0
    assert run["dataset"]["counts"]["train"] + run["dataset"]["counts"]["val"] == len(TEXTS) * len(FONT_SIZES)
    assert run["dataset"]["counts"]["val"] >= 4
    phases = {item.get("phase") for item in run["metrics"]}
    assert {"before", "train", "after"} <= phases
    before = next(item for item in run["metrics"] if item.get("phase") == "before")
    after = next(item for item in run["metrics"] if item.get("phase") == "after")
    assert before["lines"] == after["lines"] == run["dataset"]["counts"]["val"]
    assert after["cer"] < before["cer"] - 0.005, (before, after)

    # registered with its lineage and metrics, saved complete, and activated
    model = run["result_model"]
    assert model["kind"] == "finetuned" and model["name"] == f"project-{project}-run-{run_id}"
    assert model["dataset_sha256"] == run["dataset"]["content_sha256"]
    assert model["metrics"]["before"]["cer"] == before["cer"] and model["metrics"]["after"]["cer"] == after["cer"]
    assert model["metrics"]["worst_lines"] and model["metrics"]["worst_lines"][0]["reference"] in TEXTS
    directory = Path(model["checkpoint"])
    assert directory.parent == stack.models_dir / "recognition" and (directory / "model.safetensors").is_file()
    ocr = http.get(f"{stack.url}/marker-ls/api/projects/{project}/ocr/", timeout=30).json()
    assert ocr["active_model"] == model["id"] and ocr["model_version"] == model["name"] != base_version

    # the run page shows the comparison and the worst lines (the browser tests cover how pages render)
    html = http.get(f"{stack.url}/marker-ls/runs/{run_id}/", timeout=30).text
    assert f"Result: {model['name']}" in html and "Active for this project." in html
    assert f"<td>{before['cer']}</td><td>{after['cer']}</td>" in html
    assert 'id="mls-worst"' in html and model["metrics"]["worst_lines"][0]["reference"] in html
    dashboard = http.get(f"{stack.url}/marker-ls/", timeout=30).text
    assert f"{before['cer']} &rarr; {after['cer']}" in dashboard

    # the next predictions come from the new model (annotated pages are left as they are)
    image, _ = render_page(TEXTS[:2], size=(480, 160), font_size=26)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = http.post(f"{stack.url}/api/projects/{project}/import", params={"return_task_ids": "true"},
                         files={"new": ("new.png", buffer.getvalue(), "image/png")}, timeout=60)
    [new_task] = response.json()["task_ids"]

    def versions(task_id):
        # The predictions list: it reads what is stored and triggers no prediction.
        response = http.get(f"{stack.url}/api/predictions/", params={"task": task_id}, timeout=30)
        assert response.ok, response.text
        data = response.json()
        return {prediction["model_version"] for prediction in (data["results"] if isinstance(data, dict) else data)}

    wait_for(lambda: model["name"] in versions(new_task), 180, interval=1, message="the new task's prediction")
    # (listing or opening tasks would make Label Studio itself ask the backend for the current version)
    assert len(annotated_tasks) == len(FONT_SIZES)
    assert all(model["name"] not in versions(task_id) for task_id in annotated_tasks)


def test_cancel_mid_training_registers_nothing(stack, http):
    project, _ = annotated_project(stack, http, "e2e cancel")  # its own: no state from another test
    run_id = start(stack, http, project, {**TRAINING, "max_steps": 100000, "eval_steps": 100000})
    wait_for(lambda: get_run(stack, http, run_id)["step"] >= 2, 300, interval=0.5, message="training to start")
    response = http.post(f"{stack.url}/marker-ls/api/runs/{run_id}/cancel/", timeout=30)
    assert response.ok, response.text
    run = wait_run(stack, http, run_id, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert run["status"] == "cancelled" and run["result_model"] is None
    assert run["step"] < 100000
    assert not (stack.models_dir / "recognition" / f"project-{project}-run-{run_id}").exists()


def activate_base_model(stack, http, project: int, name: str) -> int:
    """A base model of the test's own: a copy of the tiny checkpoint, registered and activated for ``project``."""
    path = stack.models_dir / "recognition" / name
    shutil.copytree(stack.tiny_recognition, path)
    model, created = register_model_dir(path)
    assert created and model.kind == "base"
    response = http.patch(f"{stack.url}/marker-ls/api/projects/{project}/ocr/", json={"active_model": model.pk},
                          timeout=30)
    assert response.ok, response.text
    return model.pk


def test_killed_worker_fails_the_run_and_a_retry_succeeds(stack, http):
    project, _ = annotated_project(stack, http, "e2e killed worker")  # its own: no state from another test
    base = activate_base_model(stack, http, project, "e2e-killed-worker-base")
    run_id = start(stack, http, project, TRAINING)  # killed at step 2 of 150; the retry trains all 150
    wait_for(lambda: get_run(stack, http, run_id)["step"] >= 2, 300, interval=0.2, message="training to start")
    run = get_run(stack, http, run_id)
    horse = int(run["worker"].rsplit(":", 1)[1])
    worker = stack.workers[-1]
    os.killpg(worker.pid, signal.SIGKILL)  # the host dies: worker and its work horse
    os.kill(horse, signal.SIGKILL)
    worker.wait(10)
    # the server's periodic reaper fails runs whose heartbeat stopped (6 s in tests)
    run = wait_run(stack, http, run_id, {"failed"}, timeout=60)
    assert "no heartbeat" in run["error"] and run["result_model"] is None
    assert not (stack.models_dir / "recognition" / f"project-{project}-run-{run_id}").exists()

    assert "Retry with the same settings" in http.get(f"{stack.url}/marker-ls/runs/{run_id}/", timeout=30).text
    stack.start_worker()
    response = http.post(f"{stack.url}/marker-ls/api/runs/{run_id}/retry/", timeout=30)
    assert response.status_code == 201, response.text
    retry = response.json()
    assert retry["id"] != run_id and retry["config"] == run["config"]
    retry = wait_run(stack, http, retry["id"], {"succeeded", "failed", "cancelled"}, timeout=600)
    assert retry["status"] == "succeeded", (retry["error"], retry["log_tail"])
    assert run["base_model"] == base  # the model this test activated
    assert retry["result_model"]["parent"] == run["base_model"]
