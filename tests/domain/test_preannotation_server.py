"""Every import path pre-annotates, on a real Label Studio server (embedded executor, rapidocr)."""

from __future__ import annotations

import io

import jiwer
import pytest
from mls_helpers import wait_for
from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

LINES = ["Invoice 2026-0042 total $1,234.50", "Ship to: 12 Harbour Road, Leith", "Questions? help@example.com"]


@pytest.fixture(scope="module")
def http(label_studio):
    return label_studio.session()


@pytest.fixture(scope="module")
def page_png():
    image, _ = render_page(LINES, size=(1000, 300), font_size=30)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def create_project(label_studio, http, title, config=OCR_PRESET_CONFIG):
    response = http.post(f"{label_studio.url}/api/projects/", json={"title": title, "label_config": config},
                         timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upload(label_studio, http, project_id, name, data, content_type="image/png"):
    response = http.post(f"{label_studio.url}/api/projects/{project_id}/import", timeout=60,
                         files={"file": (name, data, content_type)}, params={"return_task_ids": "true"})
    assert response.status_code == 201, response.text
    return response.json()["task_ids"]


def task(label_studio, http, task_id):
    return http.get(f"{label_studio.url}/api/tasks/{task_id}", timeout=30).json()


def wait_predicted(label_studio, http, task_id, count=1, timeout=90):
    def predicted():
        data = task(label_studio, http, task_id)
        return data if len(data.get("predictions") or []) >= count else None

    return wait_for(predicted, timeout, interval=0.5, message=f"task {task_id} to have {count} prediction(s)")


def transcriptions(prediction):
    return [item["value"]["text"][0] for item in prediction["result"] if item["type"] == "textarea"]


def assert_matches_lines(prediction):
    from label_studio_sdk.label_interface import LabelInterface

    errors = LabelInterface(OCR_PRESET_CONFIG).validate_prediction(prediction, return_errors=True)
    assert errors == [], errors  # valid for the project's config, by Label Studio's own validator
    texts = transcriptions(prediction)
    assert len(texts) == len(LINES)
    assert jiwer.cer(" ".join(LINES), " ".join(texts)) < 0.02, texts
    boxes = {item["id"]: item for item in prediction["result"] if item["type"] == "rectanglelabels"}
    for item in prediction["result"]:
        if item["type"] == "textarea":
            assert boxes[item["id"]]["value"]["rectanglelabels"] == ["Text"]
            assert item["from_name"] == "transcription" and boxes[item["id"]]["from_name"] == "label"


def test_file_upload_is_preannotated_without_any_manual_step(label_studio, http, page_png):
    project_id = create_project(label_studio, http, "ocr upload")
    [task_id] = upload(label_studio, http, project_id, "page.png", page_png)
    data = wait_predicted(label_studio, http, task_id)
    [prediction] = data["predictions"]
    assert prediction["model_version"] == "marker-rapidocr-base"
    assert 0 < prediction["score"] <= 1
    assert_matches_lines(prediction)
    project = http.get(f"{label_studio.url}/api/projects/{project_id}", timeout=30).json()
    assert project["model_version"] == "marker-rapidocr-base"  # so annotators see the predictions


def test_json_import_and_task_api_are_preannotated(label_studio, http, page_png):
    project_id = create_project(label_studio, http, "ocr json")
    [uploaded] = upload(label_studio, http, project_id, "page.png", page_png)
    url = task(label_studio, http, uploaded)["data"]["image"]
    response = http.post(f"{label_studio.url}/api/projects/{project_id}/import", json=[{"image": url}],
                         params={"return_task_ids": "true"}, timeout=30)
    [json_task] = response.json()["task_ids"]
    created = http.post(f"{label_studio.url}/api/tasks", json={"project": project_id, "data": {"image": url}},
                        timeout=30).json()
    for task_id in (json_task, created["id"]):
        assert_matches_lines(wait_predicted(label_studio, http, task_id)["predictions"][0])


def test_bad_images_get_a_visible_per_task_error(label_studio, http, page_png):
    project_id = create_project(label_studio, http, "ocr bad images")
    corrupt = upload(label_studio, http, project_id, "corrupt.png", page_png[: len(page_png) // 3])
    text = upload(label_studio, http, project_id, "notes.png", b"these are not pixels")
    good = upload(label_studio, http, project_id, "good.png", page_png)
    wait_predicted(label_studio, http, good[0])

    def errors():
        state = http.get(f"{label_studio.url}/marker-ls/api/projects/{project_id}/ocr/", timeout=30).json()
        return state if len(state["errors"]) == 2 else None

    state = wait_for(errors, 60, message="two OCR errors")
    by_task = {item["task"]: item["error"] for item in state["errors"]}
    assert "corrupt" in by_task[corrupt[0]] or "truncated" in by_task[corrupt[0]]
    assert "not an image" in by_task[text[0]]
    assert state["done"] == 1
    # The bad tasks are still there, with no prediction; the batch went on.
    assert task(label_studio, http, corrupt[0])["predictions"] == []


def test_data_manager_action_reruns_changed_tasks_and_never_duplicates(label_studio, http, page_png):
    project_id = create_project(label_studio, http, "ocr action")
    [task_id] = upload(label_studio, http, project_id, "page.png", page_png)
    [first] = wait_predicted(label_studio, http, task_id)["predictions"]
    actions = http.get(f"{label_studio.url}/api/dm/actions", params={"project": project_id}, timeout=30).json()
    assert "Pre-annotate with Marker OCR" in [action["title"] for action in actions]

    def rerun():
        response = http.post(f"{label_studio.url}/api/dm/actions", timeout=30,
                             params={"id": "marker_ls_preannotate", "project": project_id},
                             json={"selectedItems": {"all": False, "included": [task_id]}})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["async"] is True  # Label Studio's Data Manager: "being processed in the background"
        return body

    for _ in range(2):  # unchanged since predicted: nothing queued, still the one prediction
        body = rerun()
        assert body["processed_items"] == 0
        assert body["detail"] == ("Queued 0 tasks for Marker OCR pre-annotation; skipped 1 already predicted by "
                                  "marker-rapidocr-base and unchanged since.")
    assert [p["id"] for p in task(label_studio, http, task_id)["predictions"]] == [first["id"]]

    data = task(label_studio, http, task_id)["data"]
    patched = http.patch(f"{label_studio.url}/api/tasks/{task_id}", json={"data": {**data, "note": "rescanned"}},
                         timeout=30)
    assert patched.status_code == 200, patched.text
    body = rerun()
    assert body["processed_items"] == 1 and body["detail"] == "Queued 1 tasks for Marker OCR pre-annotation."

    def replaced():
        predictions = task(label_studio, http, task_id)["predictions"]
        return predictions if [p["id"] for p in predictions] != [first["id"]] else None

    [second] = wait_for(replaced, 90, interval=0.5, message="the changed task's new prediction")
    assert second["model_version"] == "marker-rapidocr-base"
    assert_matches_lines(second)
    assert rerun()["processed_items"] == 0  # the new prediction is newer than the change


def test_preset_is_in_label_studios_template_gallery(label_studio, http):
    templates = http.get(f"{label_studio.url}/api/templates/", timeout=30).json()["templates"]
    [preset] = [t for t in templates if t["title"].startswith("Marker OCR")]
    assert preset["config"] == OCR_PRESET_CONFIG and preset["group"] == "Computer Vision"
    assert len(templates) > 20  # Label Studio's own are still there


def test_projects_without_ocr_config_are_left_alone(label_studio, http, page_png):
    config = ('<View><Image name="img" value="$image"/>'
              '<Choices name="c" toName="img"><Choice value="a"/></Choices></View>')
    project_id = create_project(label_studio, http, "not ocr", config=config)
    [task_id] = upload(label_studio, http, project_id, "page.png", page_png)
    other = create_project(label_studio, http, "ocr after not ocr")
    [other_task] = upload(label_studio, http, other, "page.png", page_png)
    wait_predicted(label_studio, http, other_task)  # the queue has moved past the first import
    assert task(label_studio, http, task_id)["predictions"] == []


def test_local_storage_sync_is_preannotated(label_studio, http, page_png):
    folder = label_studio.local_files / "scans"
    folder.mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(page_png)
    project_id = create_project(label_studio, http, "ocr local storage")
    storage = http.post(f"{label_studio.url}/api/storages/localfiles", timeout=30, json={
        "project": project_id, "path": str(folder), "regex_filter": r".*\.png", "use_blob_urls": True,
        "title": "scans"})
    assert storage.status_code == 201, storage.text
    synced = http.post(f"{label_studio.url}/api/storages/localfiles/{storage.json()['id']}/sync", timeout=60)
    assert synced.status_code == 200, synced.text
    tasks = wait_for(lambda: http.get(f"{label_studio.url}/api/tasks", params={"project": project_id},
                                      timeout=30).json()["tasks"], 60, message="synced tasks")
    assert len(tasks) == 2 and tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    state = http.get(f"{label_studio.url}/marker-ls/api/projects/{project_id}/ocr/", timeout=30).json()
    for item in tasks:
        try:
            predicted = wait_predicted(label_studio, http, item["id"])
        except AssertionError as exc:
            raise AssertionError(f"{exc}; OCR state {state}; server log {label_studio.log_tail()[-1500:]}") from exc
        assert_matches_lines(predicted["predictions"][0])
