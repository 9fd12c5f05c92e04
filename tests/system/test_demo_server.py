"""The first-start demo is a real Label Studio import: every view of it works, as for a user's upload."""

from __future__ import annotations

import io
import re

import pytest
from mls_helpers import LabelStudio, start_marker_ls, stop_process, wait_for
from mls_helpers import clean_environ as _clean_environ

from marker_ls_plugin.domain.first_start import DEMO_TITLE, PAGES


@pytest.fixture
def demo_server(clone_database, tmp_path):
    """`marker-ls start` with its demo, on a fresh migrated PostgreSQL database with no projects."""
    env = {**_clean_environ(), **clone_database("demo_"), "LABEL_STUDIO_USERNAME": LabelStudio.email,
           "LABEL_STUDIO_PASSWORD": LabelStudio.password}
    server = start_marker_ls(env, tmp_path / "data", tmp_path / "server.log")
    try:
        yield server
    finally:
        stop_process(server.proc)


def test_demo_pages_are_uploads_that_every_view_serves(demo_server):
    from PIL import Image

    http = demo_server.session()
    url = demo_server.url
    [project] = http.get(f"{url}/api/projects/", timeout=30).json()["results"]
    assert project["title"] == DEMO_TITLE and project["task_number"] == len(PAGES)
    tasks = http.get(f"{url}/api/tasks", params={"project": project["id"], "fields": "all"}, timeout=30).json()[
        "tasks"]
    assert len(tasks) == len(PAGES)
    for task in sorted(tasks, key=lambda item: item["id"]):
        image_url = task["data"]["image"]
        assert re.fullmatch(rf"/data/upload/{project['id']}/[0-9a-f]{{8}}-demo-page-\d\.png", image_url), image_url
        assert task["file_upload"] == image_url.rsplit("/", 1)[-1]  # the task points to its FileUpload row
        response = http.get(f"{url}{image_url}", timeout=30)
        assert response.status_code == 200, response.text[:500]
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "PNG" and image.width == 1100

    def predicted():
        listed = http.get(f"{url}/api/tasks", params={"project": project["id"]}, timeout=30).json()["tasks"]
        return listed if all(task["total_predictions"] == 1 for task in listed) else None

    wait_for(predicted, 180, interval=1, message=f"the demo's pre-annotations; log: {demo_server.log_tail()}")
    first = http.get(f"{url}/api/tasks/{min(task['id'] for task in tasks)}", timeout=30).json()
    texts = [item["value"]["text"][0] for item in first["predictions"][0]["result"] if item["type"] == "textarea"]
    assert PAGES[0][0] in texts
