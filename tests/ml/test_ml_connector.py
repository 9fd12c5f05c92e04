"""Label Studio's own ML connector, answered in-process, with its SSRF protection left on."""

from __future__ import annotations

import pytest
from mls_helpers import import_rendered_page, wait_for

LINES = ["Receipt 0091 paid in full", "Thank you for shopping"]


@pytest.fixture(scope="module")
def ocr_task(label_studio, http):
    """A preset project with one uploaded page, pre-annotated on import."""
    page = import_rendered_page(label_studio, http, "connector", LINES)
    wait_for(lambda: http.get(f"{label_studio.url}/api/tasks/{page['task']}", timeout=30).json()["predictions"], 90,
             interval=0.5, message="the import's prediction")
    return {**page, "project": page["project"]["id"]}


def backends(label_studio, http, project_id):
    return http.get(f"{label_studio.url}/api/ml", params={"project": project_id}, timeout=30).json()


def test_preset_projects_show_marker_ocr_connected(label_studio, http, ocr_task):
    [backend] = backends(label_studio, http, ocr_task["project"])
    assert backend["title"] == "Marker OCR" and backend["state"] == "CO"
    assert backend["url"].endswith("/marker-ls/ml/") and backend["is_interactive"]
    assert backend["model_version"] == "marker-rapidocr-base"


def test_adding_it_by_hand_validates_while_local_addresses_stay_blocked(label_studio, http, ocr_task):
    url = f"{label_studio.url}/marker-ls/ml/"
    created = http.post(f"{label_studio.url}/api/ml", timeout=30, json={
        "project": ocr_task["project"], "url": url, "title": "Marker OCR by hand", "is_interactive": False})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "CO"
    # Label Studio's protection is still on for every other local address.
    blocked = http.post(f"{label_studio.url}/api/ml", timeout=30, json={
        "project": ocr_task["project"], "url": f"{label_studio.url}/not-the-plugin/", "title": "local"})
    assert blocked.status_code in (400, 403), blocked.text
    http.delete(f"{label_studio.url}/api/ml/{created.json()['id']}", timeout=30)


def test_retrieve_predictions_fills_tasks(label_studio, http, ocr_task):
    task_url = f"{label_studio.url}/api/tasks/{ocr_task['task']}"
    for prediction in http.get(task_url, timeout=30).json()["predictions"]:
        assert http.delete(f"{label_studio.url}/api/predictions/{prediction['id']}", timeout=30).status_code == 204
    response = http.post(f"{label_studio.url}/api/dm/actions", timeout=120,
                         params={"id": "retrieve_tasks_predictions", "project": ocr_task["project"]},
                         json={"selectedItems": {"all": False, "included": [ocr_task["task"]]}})
    assert response.status_code == 200, response.text
    [prediction] = http.get(task_url, timeout=30).json()["predictions"]
    texts = [item["value"]["text"][0] for item in prediction["result"] if item["type"] == "textarea"]
    assert texts == LINES and prediction["model_version"] == "marker-rapidocr-base"


def test_interactive_request_with_a_drawn_region_returns_its_text(label_studio, http, ocr_task):
    [backend] = [b for b in backends(label_studio, http, ocr_task["project"]) if b["title"] == "Marker OCR"]
    width, height = ocr_task["size"]
    xs, ys = zip(*ocr_task["polygons"][1], strict=True)
    drawn = {
        "id": "drawn-1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {"x": min(xs) / width * 100, "y": min(ys) / height * 100, "width": (max(xs) - min(xs)) / width * 100,
                  "height": (max(ys) - min(ys)) / height * 100, "rotation": 0, "rectanglelabels": ["Handwriting"]},
    }
    response = http.post(f"{label_studio.url}/api/ml/{backend['id']}/interactive-annotating", timeout=60,
                         json={"task": ocr_task["task"], "context": {"result": [drawn]}})
    assert response.status_code == 200, response.text
    data = response.json()
    assert "errors" not in data, data
    items = data["data"]["result"]
    [text] = [item for item in items if item["type"] == "textarea"]
    [box] = [item for item in items if item["type"] == "rectanglelabels"]
    assert text["value"]["text"] == [LINES[1]] and text["id"] == box["id"] == "drawn-1"
    assert box["value"]["rectanglelabels"] == ["Handwriting"]


def test_model_tabs_test_request_returns_the_tasks_prediction(label_studio, http, ocr_task):
    """ "Send Test Request" (POST /api/ml/<id>/predict/test?random=true): the prediction annotators see."""
    [backend] = [b for b in backends(label_studio, http, ocr_task["project"]) if b["title"] == "Marker OCR"]
    task_url = f"{label_studio.url}/api/tasks/{ocr_task['task']}"
    for prediction in http.get(task_url, timeout=30).json()["predictions"]:  # it predicts a task that has none
        assert http.delete(f"{label_studio.url}/api/predictions/{prediction['id']}", timeout=30).status_code == 204
    for _ in range(2):
        response = http.post(f"{label_studio.url}/api/ml/{backend['id']}/predict/test", params={"random": "true"},
                             timeout=120)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["task"]["id"] == ocr_task["task"] and data["url"].endswith("/marker-ls/ml/predict")
        [result] = data["response"]
        [stored] = http.get(task_url, timeout=30).json()["predictions"]  # stored once, by pre-annotation
        assert result["result"] == stored["result"] and result["model_version"] == "marker-rapidocr-base"
        assert [item["value"]["text"][0] for item in result["result"] if item["type"] == "textarea"] == LINES


def drawn_region(ocr_task, line: int, region_id: str, origin: str = "manual") -> dict:
    width, height = ocr_task["size"]
    xs, ys = zip(*ocr_task["polygons"][line], strict=True)
    return {"id": region_id, "from_name": "label", "to_name": "image", "type": "rectanglelabels", "origin": origin,
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": min(xs) / width * 100, "y": min(ys) / height * 100,
                      "width": (max(xs) - min(xs)) / width * 100, "height": (max(ys) - min(ys)) / height * 100,
                      "rotation": 0, "rectanglelabels": ["Text"]}}


def interactive(label_studio, http, ocr_task, context) -> dict:
    [backend] = [b for b in backends(label_studio, http, ocr_task["project"]) if b["title"] == "Marker OCR"]
    response = http.post(f"{label_studio.url}/api/ml/{backend['id']}/interactive-annotating", timeout=60,
                         json={"task": ocr_task["task"], "context": context})
    assert response.status_code == 200, response.text
    return response.json()


def test_interactive_request_reads_the_manual_region_among_the_whole_annotation(label_studio, http, ocr_task):
    predicted = drawn_region(ocr_task, 0, "pred-0", origin="prediction")
    predicted_text = {**predicted, "from_name": "transcription", "type": "textarea",
                      "value": {**predicted["value"], "text": [LINES[0]]}}
    data = interactive(label_studio, http, ocr_task,
                       {"result": [predicted, predicted_text, drawn_region(ocr_task, 1, "drawn-2")]})
    assert "errors" not in data, data
    texts = [(item["id"], item["value"]["text"]) for item in data["data"]["result"] if item["type"] == "textarea"]
    assert texts == [("drawn-2", [LINES[1]])]


def test_interactive_request_without_a_region_says_what_to_do(label_studio, http, ocr_task):
    data = interactive(label_studio, http, ocr_task, {})
    [message] = data["errors"]
    assert message.startswith("Marker OCR cannot read this region") and "draw a box or polygon" in message


def test_interactive_request_when_the_engine_cannot_load_says_why(start_label_studio, tmp_path, ocr_task):
    """An engine that cannot load answers Label Studio's error shape with the fix, never an exception."""
    missing = str(tmp_path / "no-checkpoint")
    server = start_label_studio("surya_missing", "marker_ls_plugin.settings", {
        "MARKER_LS_ENGINE": "surya", "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT": missing,
        "MARKER_LS_SURYA_DETECTION_CHECKPOINT": missing})
    http = server.session()
    page = import_rendered_page(server, http, "no engine", LINES)
    data = interactive(server, http, {**ocr_task, "project": page["project"]["id"], "task": page["task"]},
                       {"result": [drawn_region(ocr_task, 0, "drawn-1")]})
    [message] = data["errors"]
    assert message.startswith("Marker OCR could not load its OCR engine"), message
    assert "SURYA_RECOGNITION_CHECKPOINT" in message and missing in message


def test_label_studios_start_training_starts_a_fine_tune_run(label_studio, http, ocr_task):
    """The Model tab's "Start Training" (POST /api/ml/<id>/train) records a run by whoever pressed it, and links it."""
    backend = next(b for b in backends(label_studio, http, ocr_task["project"]) if b["title"] == "Marker OCR")
    response = http.post(f"{label_studio.url}/api/ml/{backend['id']}/train", json={}, timeout=30)
    assert response.status_code == 200, response.text
    runs = http.get(f"{label_studio.url}/marker-ls/api/projects/{ocr_task['project']}/runs/", timeout=30).json()
    assert [run["trigger"] for run in runs] == ["label_studio"]
    me = http.get(f"{label_studio.url}/api/current-user/whoami", timeout=30).json()
    assert runs[0]["started_by"] == me["id"]
    url = f"{label_studio.url}/marker-ls/runs/{runs[0]['id']}/"
    answer = response.json()
    assert answer.pop("response") == answer  # repeated where the Model tab's Start Training dialog prints it
    assert answer.pop("status") in ("queued", "running")  # the embedded executor may have taken it already
    assert answer == {"run": runs[0]["id"], "url": url, "detail": f"Fine-tune run #{runs[0]['id']} started: {url}"}
    # the tests' scripted run function completes it on the server's embedded executor
    wait_for(lambda: http.get(f"{label_studio.url}/marker-ls/api/runs/{runs[0]['id']}/", timeout=30).json()[
        "status"] == "succeeded", 60, interval=0.5, message="the run to succeed")
