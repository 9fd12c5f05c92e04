"""Image URLs in tasks never make the server fetch: not file://, not cloud metadata, not private addresses.

A real server pre-annotates imported tasks whose images point at a canary HTTP server on loopback (it serves a
real page and records every request), at a readable local PNG through file://, at the cloud metadata address
and at private networks. A fetch would show as a canary hit or as a prediction; each task must get an error.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mls_helpers import wait_for
from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG


@pytest.fixture(scope="module")
def page_png() -> bytes:
    image, _ = render_page(["Canary page 0042", "Nothing to read here"], size=(800, 200), font_size=30)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def canary(page_png):
    """An HTTP server on loopback that answers every GET with a real page and records the request."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(page_png)))
            self.end_headers()
            self.wfile.write(page_png)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_task_image_urls_never_make_the_server_fetch(label_studio, http, canary, page_png, tmp_path):
    base, hits = canary
    local = tmp_path / "page.png"
    local.write_bytes(page_png)
    urls = [f"{base}/page.png", f"http://localhost:{base.rsplit(':', 1)[1]}/page.png", f"file://{local}",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/page.png",
            "http://metadata.google.internal/computeMetadata/v1/page.png", "http://10.0.0.1/page.png",
            "http://192.168.1.1/page.png", "http://[::1]/page.png"]
    project = http.post(f"{label_studio.url}/api/projects/", json={"title": "ssrf", "label_config": OCR_PRESET_CONFIG},
                        timeout=30).json()["id"]
    response = http.post(f"{label_studio.url}/api/projects/{project}/import", json=[{"image": url} for url in urls],
                         params={"return_task_ids": "true"}, timeout=30)
    assert response.status_code == 201, response.text
    task_ids = response.json()["task_ids"]

    def every_task_failed():
        state = http.get(f"{label_studio.url}/marker-ls/api/projects/{project}/ocr/", timeout=30).json()
        return state if len(state["errors"]) == len(urls) else None

    state = wait_for(every_task_failed, 120, interval=0.5, message="an OCR error for every task")
    errors = {item["task"]: item["error"] for item in state["errors"]}
    assert sorted(errors) == sorted(task_ids) and state["done"] == 0
    tasks = [http.get(f"{label_studio.url}/api/tasks/{task}", timeout=30).json() for task in task_ids]
    assert [task["predictions"] for task in tasks] == [[] for _ in task_ids]
    assert hits == []
    for task, url in zip(task_ids, urls, strict=True):
        assert "refused" in errors[task] or "not downloaded" in errors[task] or "cannot read" in errors[task], \
            (url, errors[task])
