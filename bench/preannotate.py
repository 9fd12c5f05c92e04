"""Pre-annotation overhead, printed as ratios measured in one run.

1. import -> stored prediction (file upload through Label Studio's API, embedded executor) against the raw
   engine call on the same images;
2. the in-process ML connector (Label Studio's "Retrieve Predictions") against the standalone
   `marker-ls ml-backend` over HTTP on the same tasks.

Engine: rapidocr (offline, CPU). Usage: .venv/bin/python bench/preannotate.py [--pages 6]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mls_render import render_page  # noqa: E402

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG  # noqa: E402

WORDS = "invoice total harbour minutes recipe flour water salt widget shipping date paid quote north".split()


def pages(count: int):
    out = []
    for index in range(count):
        lines = [" ".join(WORDS[(index + row + k) % len(WORDS)] for k in range(5)) + f" {index}{row}"
                 for row in range(8)]
        image, _ = render_page(lines, size=(1240, 700), font_size=30)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append((image, buffer.getvalue()))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args, env, log):
    return subprocess.Popen([sys.executable, "-m", "marker_ls_plugin.cli", *args], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def up(url, **kwargs):
    try:
        return requests.get(url, timeout=2, **kwargs).ok
    except requests.ConnectionError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6)
    options = parser.parse_args()
    data = pages(options.pages)

    from marker_ls_plugin.ocr.engines import RapidOCREngine

    engine = RapidOCREngine()
    engine.recognize_pages([data[0][0]])  # warm
    began = time.perf_counter()
    for image, _ in data:
        engine.recognize_pages([image])
    raw = time.perf_counter() - began

    workdir = Path(tempfile.mkdtemp(prefix="marker-ls-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKER_LS_", "DJANGO_DB", "POSTGRE_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "marker_ls_plugin.settings", "MARKER_LS_ENGINE": "rapidocr",
                "LABEL_STUDIO_USERNAME": "bench@example.com", "LABEL_STUDIO_PASSWORD": "bench-password",
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SECRET_KEY": "bench", "DJANGO_DB": "sqlite"})
    port, backend_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(start(["start", "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(workdir),
                            "--no-demo"], env, open(workdir / "server.log", "w")))
        wait(lambda: up(f"{url}/health"), 300, "Label Studio")
        http = requests.Session()
        http.get(f"{url}/user/login/")
        http.post(f"{url}/user/login/", data={"email": "bench@example.com", "password": "bench-password",
                                              "csrfmiddlewaretoken": http.cookies.get("csrftoken", "")})
        project = http.post(f"{url}/api/projects/", json={"title": "bench", "label_config": OCR_PRESET_CONFIG}).json()
        # Warm the server's engine with one page, then time the rest from upload to stored prediction.
        files = [(f"file{i}", (f"p{i}.png", png, "image/png")) for i, (_, png) in enumerate(data)]
        warm = http.post(f"{url}/api/projects/{project['id']}/import", files=[files[0]],
                         params={"return_task_ids": "true"}).json()["task_ids"]
        wait(lambda: http.get(f"{url}/api/tasks/{warm[0]}").json()["total_predictions"], 120, "warm-up")
        began = time.perf_counter()
        ids = http.post(f"{url}/api/projects/{project['id']}/import", files=files,
                        params={"return_task_ids": "true"}).json()["task_ids"]

        def all_predicted():
            tasks = http.get(f"{url}/api/tasks", params={"project": project["id"], "page_size": 1000}).json()
            return sum(1 for t in tasks["tasks"] if t["id"] in ids and t["total_predictions"]) == len(ids)

        assert len(ids) == len(data), ids
        wait(all_predicted, 600, "pre-annotation")
        pipeline = time.perf_counter() - began
        found = [sum(1 for item in prediction["result"] if item["type"] == "textarea")
                 for task_id in ids for prediction in http.get(f"{url}/api/tasks/{task_id}").json()["predictions"]]

        # Retrieve Predictions through Label Studio's connector (in-process) after deleting them.
        for task_id in ids:
            for prediction in http.get(f"{url}/api/tasks/{task_id}").json()["predictions"]:
                http.delete(f"{url}/api/predictions/{prediction['id']}")
        began = time.perf_counter()
        http.post(f"{url}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project["id"]},
                  json={"selectedItems": {"all": False, "included": ids}}, timeout=600)
        in_process = time.perf_counter() - began

        token = http.get(f"{url}/api/current-user/token").json()["token"]
        procs.append(start(["ml-backend", "--port", str(backend_port), "--host", "127.0.0.1", "--engine", "rapidocr",
                            "--label-studio-url", url, "--api-key", token], env, open(workdir / "backend.log", "w")))
        backend = f"http://127.0.0.1:{backend_port}"
        wait(lambda: up(f"{backend}/health"), 120, "standalone backend")
        tasks = [{"id": t, "data": http.get(f"{url}/api/tasks/{t}").json()["data"]} for t in ids]
        requests.post(f"{backend}/predict", json={"tasks": tasks[:1], "label_config": OCR_PRESET_CONFIG}, timeout=600)
        began = time.perf_counter()
        requests.post(f"{backend}/predict", json={"tasks": tasks, "label_config": OCR_PRESET_CONFIG}, timeout=600)
        standalone = time.perf_counter() - began
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    n = len(data)
    print(f"pages: {n}, engine: rapidocr {engine.version}")
    print(f"lines found per page by the pipeline: {found} (8 rendered)")
    print(f"raw engine:                   {raw:7.2f} s  ({raw / n:.2f} s/page)")
    print(f"import -> stored prediction:  {pipeline:7.2f} s  ratio to raw {pipeline / raw:.2f}")
    print(f"retrieve, in-process:         {in_process:7.2f} s  ratio to raw {in_process / raw:.2f}")
    print(f"standalone backend over HTTP: {standalone:7.2f} s  ratio to raw {standalone / raw:.2f}")
    print(f"in-process / standalone:      {in_process / standalone:.2f}")


if __name__ == "__main__":
    main()
