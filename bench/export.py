"""Fine-tuning export speed and memory, printed as figures and ratios measured in one run.

1. tasks/s of the in-process export (Label Studio's ORM) against the remote one (label-studio-sdk over HTTP)
   on the same project of one Label Studio server (SQLite, pre-annotation off);
2. peak memory of the in-process export at 1,000 against 10,000 tasks: it streams, so the ratio stays near 1.

Projects are bulk-created through the ORM: annotated tasks (4 lines each) over a few rendered pages that
many tasks share, so crops of a shared page are written once and reused (the export hashes them again).
Every measurement runs in a fresh process. Usage: .venv/bin/python bench/export.py [--sizes 1000 10000]
[--remote-sizes 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PAGES = 4
LINES = 4
SIZE = (900, 320)
EMAIL, PASSWORD = "bench@example.com", "bench-password"


def populate(size: int) -> int:
    """A project of ``size`` annotated tasks (run with Django set up); returns its id."""
    sys.path.insert(0, str(ROOT / "tests"))
    from data_import.models import FileUpload
    from django.core.files.base import ContentFile
    from mls_render import render_page
    from projects.models import Project
    from tasks.models import Annotation, Task
    from users.models import User

    from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
    from marker_ls_plugin.ocr.results import rectangle_value

    user = User.objects.get(email=EMAIL)
    project = Project.objects.create(title=f"export bench {size}", created_by=user, label_config=OCR_PRESET_CONFIG,
                                     organization=user.active_organization)
    pages = []
    for index in range(PAGES):
        texts = [f"page {index} line {row} of the export bench" for row in range(LINES)]
        image, polygons = render_page(texts, size=SIZE, font_size=26)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        upload = FileUpload.objects.create(user=user, project=project,
                                           file=ContentFile(buffer.getvalue(), name=f"page{index}.png"))
        pages.append((upload.url, [rectangle_value(p, *SIZE) for p in polygons]))
    for start in range(0, size, 1000):
        count = min(1000, size - start)
        tasks = Task.objects.bulk_create(
            [Task(project=project, data={"image": pages[(start + i) % PAGES][0]}, inner_id=start + i + 1)
             for i in range(count)])
        Annotation.objects.bulk_create(
            [Annotation(task=task, project=project, completed_by=user,
                        result=_result(pages[(start + i) % PAGES][1], start + i)) for i, task in enumerate(tasks)])
    return project.pk


def _result(geometries: list[dict], n: int) -> list[dict]:
    result = []
    for row, geometry in enumerate(geometries):
        common = {"id": f"t{n}r{row}", "to_name": "image", "original_width": SIZE[0], "original_height": SIZE[1],
                  "image_rotation": 0}
        result += [{**common, "from_name": "label", "type": "rectanglelabels",
                    "value": {**geometry, "rectanglelabels": ["Text"]}},
                   {**common, "from_name": "transcription", "type": "textarea",
                    "value": {**geometry, "text": [f"task {n} line {row}"]}}]
    return result


def measure(project: int, out: str, url: str | None, api_key: str | None, trace: bool) -> dict:
    """Export once in this process: seconds, counts, tracemalloc peak (with ``trace``), RSS growth."""
    import tracemalloc

    if url is None:
        import django

        django.setup()
    from marker_ls_plugin.export import export_annotations_for_finetuning

    rss_before = _rss()
    if trace:
        tracemalloc.start()
    began = time.perf_counter()
    manifest = export_annotations_for_finetuning(project, out, url=url, api_key=api_key, val_fraction=0.1)
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    return {"seconds": seconds, "tasks": manifest["tasks"]["exported"], "lines": manifest["counts"]["train"]
            + manifest["counts"]["val"], "hash": manifest["content_sha256"], "traced_peak": peak,
            "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before}


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def up(url):
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


def child(env: dict, *args: str) -> dict:
    """Run this script in a fresh process (``--child ...``) and return the JSON it prints last."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(args: list[str]) -> None:
    kind = args[0]
    if kind == "populate":
        import django

        django.setup()
        print(json.dumps({"project": populate(int(args[1]))}))
    else:  # measure PROJECT OUT TRACE [URL KEY]
        url, key = (args[4], args[5]) if len(args) > 4 else (None, None)
        print(json.dumps(measure(int(args[1]), args[2], url, key, args[3] == "1")))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--remote-sizes", type=int, nargs="*", default=[1000],
                        help="sizes also exported over the API (default: 1000)")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="marker-ls-bench-export-"))
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MARKER_LS_", "DJANGO_", "POSTGRE_", "DATABASE_NAME", "LABEL_STUDIO_"))}
    env = {**base_env, "DJANGO_SETTINGS_MODULE": "marker_ls_plugin.settings", "SECRET_KEY": "bench",
           "DJANGO_DB": "sqlite", "LABEL_STUDIO_BASE_DATA_DIR": str(workdir), "LABEL_STUDIO_USERNAME": EMAIL,
           "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "MARKER_LS_PREANNOTATE_ON_IMPORT": "false"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "marker_ls_plugin.cli", "start", "--port", str(port), "--host", "127.0.0.1",
         "--data-dir", str(workdir), "--no-demo"], env=env, cwd=ROOT, stdout=open(workdir / "server.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    results: dict[tuple[str, int], dict] = {}
    try:
        wait(lambda: up(f"{url}/health"), 300, "Label Studio")
        http = requests.Session()
        http.get(f"{url}/user/login/")
        http.post(f"{url}/user/login/", data={"email": EMAIL, "password": PASSWORD,
                                              "csrfmiddlewaretoken": http.cookies.get("csrftoken", "")})
        token = http.get(f"{url}/api/current-user/token").json()["token"]
        for size in options.sizes:
            began = time.perf_counter()
            project = str(child(env, "populate", str(size))["project"])
            print(f"created {size} annotated tasks in {time.perf_counter() - began:.1f} s", file=sys.stderr)
            out = workdir / f"out-{size}"
            results["in-process", size] = child(env, "measure", project, str(out / "timed"), "0")
            results["traced", size] = child(env, "measure", project, str(out / "traced"), "1")
            if size in options.remote_sizes:
                results["remote", size] = child(base_env, "measure", project, str(out / "remote"), "0", url, token)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    report(results, options)


def report(results: dict, options: argparse.Namespace) -> None:
    mib = 1024 * 1024
    print(f"in-process export (ORM) against remote (label-studio-sdk over HTTP), one Label Studio server, SQLite, "
          f"{os.cpu_count()} CPUs; {LINES} lines per task over {PAGES} shared {SIZE[0]}x{SIZE[1]} pages")
    for size in options.sizes:
        local = results["in-process", size]
        line = (f"{size:>6} tasks, {local['lines']:>6} lines: in-process {local['tasks'] / local['seconds']:7.1f} "
                f"tasks/s ({local['seconds']:.1f} s)")
        remote = results.get(("remote", size))
        if remote:
            same = "same" if remote["hash"] == local["hash"] else "DIFFERENT"
            line += (f", remote {remote['tasks'] / remote['seconds']:7.1f} tasks/s ({remote['seconds']:.1f} s), "
                     f"in-process/remote tasks/s = {remote['seconds'] / local['seconds']:.2f}, content hash {same}")
        else:
            measured = [results["remote", s] for s in options.sizes if ("remote", s) in results]
            guess = f"would take about {size * measured[0]['seconds'] / measured[0]['tasks'] / 60:.0f} min; " \
                if measured else ""
            line += f"; remote not measured at this size ({guess}add it with --remote-sizes)"
        print(line)
    sizes = sorted(options.sizes)
    for size in sizes:
        traced, local = results["traced", size], results["in-process", size]
        print(f"{size:>6} tasks: in-process peak traced memory {traced['traced_peak'] / mib:6.1f} MiB, "
              f"peak RSS growth {local['rss_growth'] / mib:6.1f} MiB")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        traced = results["traced", large]["traced_peak"] / results["traced", small]["traced_peak"]
        rss = results["in-process", large]["rss_growth"] / max(1, results["in-process", small]["rss_growth"])
        print(f"peak traced memory {large}/{small} = {traced:.2f}; peak RSS growth {large}/{small} = {rss:.2f} "
              f"(tasks {large / small:.0f}x)")
        speed = [results["in-process", s]["tasks"] / results["in-process", s]["seconds"] for s in (small, large)]
        print(f"in-process tasks/s {large}/{small} = {speed[1] / speed[0]:.2f}")


if __name__ == "__main__":
    main()
