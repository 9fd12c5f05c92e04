"""Pre-annotation overhead, printed as ratios to the raw engine loop on the same pages, measured in one run.

1. import -> every task predicted (file upload through Label Studio's API, embedded executor) against the
   upload alone plus the raw engine loop; the same for many small imports (each page imported by its own
   request, as a user dropping files one by one or a script posting tasks), against their own uploads plus raw;
2. a task opened (GET /api/tasks/<id>, what the labeling stream does) right after its import, before its
   queued prediction is stored: Label Studio predicts it inside that request; the wait in raw pages;
3. the in-process ML connector (Label Studio's "Retrieve Predictions") and the standalone `marker-ls ml-backend`
   over HTTP on the same tasks, against the raw loop.

Each route is timed right after a raw loop of its own, so load elsewhere on the machine moves both; each ratio
is the median of ``--rounds``. Completion is read from the database file, not by polling the API (which would
take CPU from the server being measured). Engine: rapidocr (offline, CPU).
Usage: .venv/bin/python bench/preannotate.py [--pages 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import sqlite3
import statistics
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


def raw_loop(engine, data) -> float:
    """Seconds the engine takes for the pages, one call a page, in this process (the physical limit)."""
    began = time.perf_counter()
    for image, _ in data:
        engine.recognize_pages([image])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="each route's ratio is the median of this many")
    options = parser.parse_args()
    data = pages(options.pages)
    n = len(data)

    from marker_ls_plugin.ocr.rapidocr import RapidOCREngine

    engine = RapidOCREngine()
    engine.recognize_pages([data[0][0]])  # warm
    print(f"pages: {n}, engine: rapidocr {engine.version}; each route is timed right after the raw engine loop on "
          f"the same pages, its ratio to that loop, the median of {options.rounds} rounds", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="marker-ls-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKER_LS_", "DJANGO_DB", "POSTGRE_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "marker_ls_plugin.settings", "MARKER_LS_ENGINE": "rapidocr",
                "LABEL_STUDIO_USERNAME": "bench@example.com", "LABEL_STUDIO_PASSWORD": "bench-password",
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SECRET_KEY": "bench", "DJANGO_DB": "sqlite"})
    port, backend_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    procs = []
    ratios: dict[str, list[float]] = {"import": [], "small": [], "opened": [], "retrieve": [], "standalone": []}
    try:
        procs.append(start(["start", "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(workdir),
                            "--no-demo"], env, open(workdir / "server.log", "w")))
        wait(lambda: up(f"{url}/health"), 300, "Label Studio")
        http = requests.Session()
        http.get(f"{url}/user/login/")
        http.post(f"{url}/user/login/", data={"email": "bench@example.com", "password": "bench-password",
                                              "csrfmiddlewaretoken": http.cookies.get("csrftoken", "")})

        def new_project(title, config):
            return http.post(f"{url}/api/projects/", json={"title": title, "label_config": config}).json()["id"]

        def upload(project_id, files):
            return http.post(f"{url}/api/projects/{project_id}/import", files=files,
                             params={"return_task_ids": "true"}).json()["task_ids"]

        database = sqlite3.connect(f"file:{workdir / 'label_studio.sqlite3'}?mode=ro", uri=True)

        def predicted(ids):
            # Read from the database file: polling the API would take the CPU of the server being measured.
            query = f"SELECT COUNT(DISTINCT task_id) FROM prediction WHERE task_id IN ({','.join('?' * len(ids))})"
            return database.execute(query, ids).fetchone()[0] == len(ids)

        files = [(f"file{i}", (f"p{i}.png", png, "image/png")) for i, (_, png) in enumerate(data)]
        # The upload alone: the same files into a project that is not OCR-shaped (nothing pre-annotates it).
        plain = new_project("bench-upload", '<View><Image name="image" value="$image"/><Choices name="kind" '
                            'toName="image"><Choice value="page"/></Choices></View>')
        project = new_project("bench", OCR_PRESET_CONFIG)
        upload(plain, [files[0]])
        warm = upload(project, [files[0]])  # the server's engine loads here
        wait(lambda: predicted(warm), 120, "warm-up")
        token = http.get(f"{url}/api/current-user/token").json()["token"]
        procs.append(start(["ml-backend", "--port", str(backend_port), "--host", "127.0.0.1", "--engine", "rapidocr",
                            "--label-studio-url", url, "--api-key", token], env, open(workdir / "backend.log", "w")))
        backend = f"http://127.0.0.1:{backend_port}"
        wait(lambda: up(f"{backend}/health") or procs[-1].poll() is not None, 120, "standalone backend")
        if procs[-1].poll() is not None:
            print(f"standalone backend did not start; see {workdir / 'backend.log'}", flush=True)
            del ratios["standalone"]

        for round_ in range(1, options.rounds + 1):
            began = time.perf_counter()
            upload(plain, files)
            uploaded = time.perf_counter() - began
            raw = raw_loop(engine, data)
            began = time.perf_counter()
            ids = upload(project, files)
            assert len(ids) == n, ids
            wait(lambda ids=ids: predicted(ids), 600, "pre-annotation")
            pipeline = time.perf_counter() - began
            ratios["import"].append(pipeline / (uploaded + raw))
            found = [sum(1 for item in prediction["result"] if item["type"] == "textarea") for task_id in ids
                     for prediction in http.get(f"{url}/api/tasks/{task_id}").json()["predictions"]]
            print(f"round {round_}: raw engine {raw:5.2f} s ({raw / n:.2f} s/page); upload alone {uploaded:.2f} s; "
                  f"import -> every task predicted {pipeline:5.2f} s, ratio to upload + raw {ratios['import'][-1]:.2f};"
                  f" lines found per page {found} (8 rendered)", flush=True)

            # Many small imports: each page by its own request (the upload alone likewise, one request a page).
            began = time.perf_counter()
            for file in files:
                upload(plain, [file])
            uploaded = time.perf_counter() - began
            raw = raw_loop(engine, data)
            began = time.perf_counter()
            small_ids = [task_id for file in files for task_id in upload(project, [file])]
            assert len(small_ids) == n, small_ids
            wait(lambda ids=small_ids: predicted(ids), 600, "pre-annotation")
            pipeline = time.perf_counter() - began
            ratios["small"].append(pipeline / (uploaded + raw))
            print(f"round {round_}: raw engine {raw:5.2f} s; upload alone, one request a page {uploaded:.2f} s; "
                  f"{n} small imports -> every task predicted {pipeline:5.2f} s, ratio to upload + raw "
                  f"{ratios['small'][-1]:.2f}", flush=True)

            # A task opened right after its import, before its queued prediction is stored.
            opened_ids = upload(project, files)
            began = time.perf_counter()
            opened = http.get(f"{url}/api/tasks/{opened_ids[0]}").json()
            waited = time.perf_counter() - began
            ratios["opened"].append(waited / (raw / n))
            wait(lambda ids=opened_ids: predicted(ids), 600, "pre-annotation")
            print(f"round {round_}: task opened before its queued prediction: {waited:5.2f} s, "
                  f"{ratios['opened'][-1]:.2f} raw pages ({len(opened['predictions'])} prediction in the answer)",
                  flush=True)

            # Retrieve Predictions through Label Studio's connector (in-process) after deleting them.
            for task_id in ids:
                for prediction in http.get(f"{url}/api/tasks/{task_id}").json()["predictions"]:
                    http.delete(f"{url}/api/predictions/{prediction['id']}")
            raw = raw_loop(engine, data)
            began = time.perf_counter()
            http.post(f"{url}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                      json={"selectedItems": {"all": False, "included": ids}}, timeout=600)
            in_process = time.perf_counter() - began
            ratios["retrieve"].append(in_process / raw)
            line = (f"round {round_}: raw engine {raw:5.2f} s; retrieve, in-process {in_process:5.2f} s, "
                    f"ratio to raw {ratios['retrieve'][-1]:.2f}")
            if "standalone" in ratios:
                tasks = [{"id": t, "data": http.get(f"{url}/api/tasks/{t}").json()["data"]} for t in ids]
                requests.post(f"{backend}/predict", json={"tasks": tasks[:1], "label_config": OCR_PRESET_CONFIG},
                              timeout=600)
                raw = raw_loop(engine, data)
                began = time.perf_counter()
                requests.post(f"{backend}/predict", json={"tasks": tasks, "label_config": OCR_PRESET_CONFIG},
                              timeout=600)
                standalone = time.perf_counter() - began
                ratios["standalone"].append(standalone / raw)
                line += (f"; raw engine {raw:5.2f} s; standalone backend over HTTP {standalone:5.2f} s, "
                         f"ratio to raw {ratios['standalone'][-1]:.2f}")
            print(line, flush=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    print(f"median import -> every task predicted / (upload + raw): {statistics.median(ratios['import']):.2f}")
    print(f"median many small imports -> every task predicted / (upload + raw), one request a page: "
          f"{statistics.median(ratios['small']):.2f}")
    print(f"median task opened before its queued prediction, in raw pages: {statistics.median(ratios['opened']):.2f}")
    print(f"median retrieve, in-process / raw:                      {statistics.median(ratios['retrieve']):.2f}")
    if ratios.get("standalone"):
        print(f"median standalone backend over HTTP / raw:              {statistics.median(ratios['standalone']):.2f}")


if __name__ == "__main__":
    main()
