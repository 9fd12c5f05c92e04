"""The export over Label Studio's API (label-studio-sdk) against the in-process one, on a real server.

Projects, uploads and annotations are made through the HTTP API in the editor's format. The in-process route
runs `marker-ls export` in a subprocess on the server's own SQLite database and files; the remote route runs
in a process with no Django settings. Both must write the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from mls_helpers import ROOT, clean_environ, wait_for
from mls_render import bbox, render_page
from PIL import Image

from marker_ls_plugin.dataset.remote import image_request_url
from marker_ls_plugin.export import split_of
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.ocr.results import rectangle_value
from marker_ls_plugin.ocr.types import ImageError

SIZE = (900, 300)
LINES = ["Remote export line one", "Second line, 42 pages", "Third and final line"]
POLYGON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="label" toName="image"><Label value="Text"/><Label value="Handwriting"/></PolygonLabels>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true"/>
</View>"""


class Api:
    """Label Studio's HTTP API with the admin's legacy token, as a script or the SDK would call it."""

    def __init__(self, label_studio):
        self.url = label_studio.url
        token = label_studio.session().get(f"{self.url}/api/current-user/token", timeout=30).json()["token"]
        self.token = token
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, expect: int, **kwargs):
        response = self.http.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def project(self, title: str, config: str) -> int:
        return self.call("POST", "/api/projects/", 201, json={"title": title, "label_config": config})["id"]

    def upload(self, project: int, name: str, raw: bytes) -> int:
        found = self.call("POST", f"/api/projects/{project}/import", 201, params={"return_task_ids": "true"},
                          files={"file": (name, raw, "image/png")})
        return found["task_ids"][0]

    def annotate(self, task: int, result: list, **flags) -> int:
        return self.call("POST", f"/api/tasks/{task}/annotations/", 201, json={"result": result, **flags})["id"]

    def task(self, task: int) -> dict:
        return self.call("GET", f"/api/tasks/{task}", 200)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rectangle(region_id, polygon, text, label="Text", image_rotation=0):
    """rectanglelabels + per-region textarea sharing ``id``, as the editor saves them (rotation included)."""
    geometry = rectangle_value(polygon, *SIZE)
    common = {"id": region_id, "to_name": "image", "original_width": SIZE[0], "original_height": SIZE[1],
              "image_rotation": image_rotation, "origin": "manual"}
    return [{**common, "from_name": "label", "type": "rectanglelabels",
             "value": {**geometry, "rectanglelabels": [label]}},
            {**common, "from_name": "transcription", "type": "textarea", "value": {**geometry, "text": [text]}}]


def polygon(region_id, points, text, label="Text"):
    percent = [[x / SIZE[0] * 100, y / SIZE[1] * 100] for x, y in points]
    common = {"id": region_id, "to_name": "image", "original_width": SIZE[0], "original_height": SIZE[1],
              "image_rotation": 0, "origin": "manual"}
    return [{**common, "from_name": "label", "type": "polygonlabels",
             "value": {"points": percent, "closed": True, "polygonlabels": [label]}},
            {**common, "from_name": "transcription", "type": "textarea", "value": {"points": percent, "text": [text]}}]


@pytest.fixture(scope="module")
def pages():
    straight, polygons = render_page(LINES, size=SIZE, font_size=28)
    slanted, (slanted_polygon,) = render_page(["A slanted line to deskew"], size=SIZE, font_size=28, rotate_deg=3)
    return {"straight": (straight, polygons), "slanted": (slanted, slanted_polygon)}


@pytest.fixture(scope="module")
def projects(label_studio, pages):
    """An OCR-preset project with every case, and a polygon-config project."""
    api = Api(label_studio)
    straight, polygons = pages["straight"]
    slanted, slanted_polygon = pages["slanted"]
    ids: dict = {"api": api}
    ocr = ids["ocr"] = api.project("export remote vs in-process", OCR_PRESET_CONFIG)

    page = ids["page"] = api.upload(ocr, "page.png", png(straight))
    result = [item for i, text in enumerate(LINES) for item in rectangle(f"r{i}", polygons[i], text)]
    result += rectangle("rot", slanted_polygon, "rotated in the editor", image_rotation=90)
    ids["page_annotation"] = api.annotate(page, result)

    slanted_task = ids["slanted"] = api.upload(ocr, "slanted.png", png(slanted))
    api.annotate(slanted_task, rectangle("s", slanted_polygon, "A slanted line to deskew"))

    gt = ids["gt"] = api.upload(ocr, "gt.png", png(straight))
    api.annotate(gt, rectangle("r", polygons[0], "ground truth"), ground_truth=True)
    api.annotate(gt, rectangle("r", polygons[0], "later, not ground truth"))

    latest = ids["latest"] = api.upload(ocr, "latest.png", png(straight))
    older = api.annotate(latest, rectangle("r", polygons[1], "first, edited last"))
    api.annotate(latest, rectangle("r", polygons[1], "second"))
    api.annotate(latest, rectangle("r", polygons[1], "cancelled"), was_cancelled=True)
    # Edited after the others: most recently updated although not the highest id.
    api.call("PATCH", f"/api/annotations/{older}/", 200, json={"result": rectangle("r", polygons[1], "edited")})

    cancelled = ids["cancelled"] = api.upload(ocr, "cancelled.png", png(straight))
    api.annotate(cancelled, rectangle("r", polygons[0], "only cancelled"), was_cancelled=True)
    api.upload(ocr, "unannotated.png", png(straight))

    gone = ids["gone"] = api.upload(ocr, "gone.png", png(straight))
    api.annotate(gone, rectangle("g", polygons[0], "file deleted"))
    (label_studio.data_dir / "media" / api.task(gone)["data"]["image"].removeprefix("/data/")).unlink()
    corrupt = ids["corrupt"] = api.upload(ocr, "corrupt.png", b"this is not a png")
    api.annotate(corrupt, rectangle("c", polygons[0], "corrupt"))

    folder = label_studio.local_files / "export-scans"
    folder.mkdir(exist_ok=True)
    for name in ("scan.png", "lost.png"):
        (folder / name).write_bytes(png(straight))
    storage = api.call("POST", "/api/storages/localfiles", 201, json={
        "project": ocr, "path": str(folder), "regex_filter": r".*\.png", "use_blob_urls": True, "title": "scans"})
    api.call("POST", f"/api/storages/localfiles/{storage['id']}/sync", 200)

    def synced():
        tasks = api.call("GET", "/api/tasks", 200, params={"project": ocr, "page_size": 100})["tasks"]
        found = {Path(t["data"]["image"]).name: t["id"] for t in tasks if "local-files" in str(t["data"]["image"])}
        return found if len(found) == 2 else None

    found = wait_for(synced, 60, message="the local-files tasks")
    ids["local"], ids["lost"] = found["scan.png"], found["lost.png"]
    api.annotate(ids["local"], rectangle("l", polygons[2], LINES[2]))
    api.annotate(ids["lost"], rectangle("x", polygons[2], "file deleted after the sync"))
    (folder / "lost.png").unlink()

    poly = ids["polygon"] = api.project("export polygons", POLYGON_CONFIG)
    poly_task = ids["poly_task"] = api.upload(poly, "poly.png", png(straight))
    notched = [polygons[0][0], polygons[0][1], polygons[0][2], ((polygons[0][0][0] + polygons[0][1][0]) / 2,
                                                                polygons[0][2][1] - 5), polygons[0][3]]
    api.annotate(poly_task, polygon("p0", notched, LINES[0]) + polygon("p1", polygons[1], LINES[1], "Handwriting"))
    return ids


def server_env(label_studio) -> dict[str, str]:
    """The server's environment: `marker-ls export` in it reads the server's database and files."""
    return {**clean_environ(), "DJANGO_DB": "sqlite", "LABEL_STUDIO_BASE_DATA_DIR": str(label_studio.data_dir),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.local_files)}


def no_django_env() -> dict[str, str]:
    return {k: v for k, v in clean_environ().items() if not k.startswith(("DJANGO_", "LABEL_STUDIO_"))}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


REMOTE = """
import json, sys
from marker_ls_plugin.export import export_annotations_for_finetuning
import django.conf
url, key, project, out = sys.argv[1:5]
manifest = export_annotations_for_finetuning(int(project), out, url=url, api_key=key, val_fraction=0.5, seed=3)
assert not django.conf.settings.configured and "django.db" not in sys.modules, "the remote route used Django"
"""


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for split in ("train", "val") for line in (out / f"{split}.jsonl").open()]


@pytest.fixture(scope="module")
def exported(label_studio, projects, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-server")
    api, ocr = projects["api"], projects["ocr"]
    run(["-c", REMOTE, api.url, api.token, str(ocr), str(root / "remote")], no_django_env())
    run(["-m", "marker_ls_plugin.cli", "export", "--project", str(ocr), "--output", str(root / "local"),
         "--val-fraction", "0.5", "--seed", "3"], server_env(label_studio))
    return root


def test_remote_and_in_process_write_the_same_bytes(exported, projects, pages):
    remote, local = exported / "remote", exported / "local"
    assert outputs(remote) == outputs(local)
    manifests = [json.loads((out / "manifest.json").read_text()) for out in (remote, local)]
    assert manifests[0]["content_sha256"] == manifests[1]["content_sha256"]
    assert manifests[0]["versions"] == manifests[1]["versions"] == {"label_studio": "1.23.2",
                                                                    "marker_ls_plugin": manifests[1]["versions"][
                                                                        "marker_ls_plugin"]}
    for manifest in manifests:  # a missing image is worded by each route; test_bad_images... compares them
        del manifest["skipped"], manifest["skipped_counts"]
    assert manifests[0] == manifests[1]
    assert manifests[0]["tasks"] == {"exported": 8, "total": 10}
    assert manifests[0]["counts"]["val"] and manifests[0]["counts"]["train"]

    lines = read_lines(remote)
    for line in lines:
        split = split_of(f"{line['task']}:{line['region']}", 3, 0.5)
        assert line in map(json.loads, (remote / f"{split}.jsonl").open())
    by_region = {(line["task"], line["region"]): line for line in lines}
    straight, polygons = pages["straight"]
    page = projects["page"]
    for i, polygon_ in enumerate(polygons):
        line = by_region[(page, f"r{i}")]
        x0, y0, x1, y1 = (int(v) for v in bbox(polygon_))
        box = [max(0, x0 - 4), max(0, y0 - 4), min(SIZE[0], x1 + 4), min(SIZE[1], y1 + 4)]
        assert (line["bbox"], line["text"], line["annotation"]) == (box, LINES[i], projects["page_annotation"])
        assert np.array_equal(np.asarray(Image.open(remote / line["image"])), np.asarray(straight.crop(box)))
    slanted = by_region[(projects["slanted"], "s")]
    assert slanted["rotation"] == pytest.approx(357, abs=0.01)
    crop = Image.open(remote / slanted["image"])
    assert crop.size[0] > 5 * crop.size[1] and slanted["bbox"][3] - slanted["bbox"][1] > crop.size[1] + 10

    texts = {task: by_region[(task, "r")]["text"] for task in (projects["gt"], projects["latest"])}
    assert texts == {projects["gt"]: "ground truth", projects["latest"]: "edited"}
    assert projects["cancelled"] not in {line["task"] for line in lines}
    local_line = by_region[(projects["local"], "l")]
    assert local_line["source_image"].startswith("/data/local-files/?d=") and local_line["text"] == LINES[2]
    x0, y0, x1, y1 = local_line["bbox"]
    assert np.array_equal(np.asarray(Image.open(remote / local_line["image"])),
                          np.asarray(straight.crop((x0, y0, x1, y1))))


def test_bad_images_are_skipped_with_reasons_both_ways(exported, projects):
    reasons = {}
    for route in ("remote", "local"):
        skipped = json.loads((exported / route / "manifest.json").read_text())["skipped"]
        reasons[route] = {(s["task"], s["region"]): s["reason"] for s in skipped}
        assert set(reasons[route]) == {(projects["page"], "rot"), (projects["gone"], "g"),
                                       (projects["lost"], "x"), (projects["corrupt"], "c")}
        assert reasons[route][(projects["page"], "rot")] == "image rotated in the editor"
        assert "file not found" in reasons[route][(projects["lost"], "x")]
        assert "not an image" in reasons[route][(projects["corrupt"], "c")]
    assert reasons["remote"][(projects["lost"], "x")].endswith("(HTTP 404)")
    assert "file not found" in reasons["local"][(projects["gone"], "g")]
    # Label Studio 1.23 answers 500, not 404, for an upload whose file was deleted.
    assert reasons["remote"][(projects["gone"], "g")].endswith("HTTP 500")


def test_polygon_project_over_the_cli_both_ways(label_studio, projects, pages, tmp_path):
    api, project = projects["api"], projects["polygon"]
    remote_env = {**no_django_env(), "LABEL_STUDIO_API_KEY": api.token}
    args = ["-m", "marker_ls_plugin.cli", "export", "--project", str(project), "--progress-every", "1"]
    done = run([*args, "--output", str(tmp_path / "remote"), "--url", api.url], remote_env)
    assert "1 tasks, 2 lines" in done.stderr and "Exported" in done.stdout
    run([*args, "--output", str(tmp_path / "local")], server_env(label_studio))
    assert outputs(tmp_path / "remote") == outputs(tmp_path / "local")
    manifests = [json.loads((tmp_path / out / "manifest.json").read_text()) for out in ("remote", "local")]
    assert manifests[0] == manifests[1]

    straight, polygons = pages["straight"]
    lines = {line["region"]: line for line in read_lines(tmp_path / "remote")}
    assert (lines["p1"]["label"], lines["p1"]["text"]) == ("Handwriting", LINES[1])
    for region, polygon_ in (("p0", polygons[0]), ("p1", polygons[1])):
        x0, y0, x1, y1 = (int(v) for v in bbox(polygon_))
        box = (max(0, x0 - 4), max(0, y0 - 4), min(SIZE[0], x1 + 4), min(SIZE[1], y1 + 4))
        assert lines[region]["bbox"] == list(box)
        crop = np.asarray(Image.open(tmp_path / "remote" / lines[region]["image"]))
        assert np.array_equal(crop, np.asarray(straight.crop(box)))

    # A task added later changes no earlier line's split, and the crops already written are reused.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "remote" / "images").iterdir()}
    task = api.upload(project, "poly2.png", png(straight))
    api.annotate(task, polygon("p2", polygons[2], LINES[2]))
    run([*args, "--output", str(tmp_path / "remote"), "--url", api.url], remote_env)
    after = {(line["task"], line["region"]): line for line in read_lines(tmp_path / "remote")}
    assert {(line["task"], line["region"]): line for line in lines.values()}.items() <= after.items()
    for name, mtime in before.items():
        assert (tmp_path / "remote" / "images" / name).stat().st_mtime_ns == mtime


def test_remote_errors_are_reported(label_studio, projects, tmp_path):
    from marker_ls_plugin.export import export_annotations_for_finetuning

    api = projects["api"]
    with pytest.raises(ValueError, match="refused the API key"):
        export_annotations_for_finetuning(projects["ocr"], str(tmp_path), url=api.url, api_key="not-a-key")
    with pytest.raises(ValueError, match="no project with id"):
        export_annotations_for_finetuning(10**8, str(tmp_path), url=api.url, api_key=api.token)
    with pytest.raises(ValueError, match="needs an API key"):
        export_annotations_for_finetuning(projects["ocr"], str(tmp_path), url=api.url, api_key="")


def test_image_request_url():
    base = "http://ls:8080"
    assert image_request_url(base, 7, "/data/upload/1/a.png") == "http://ls:8080/data/upload/1/a.png"
    assert image_request_url(base, 7, "/data/local-files/?d=x/a.png") == "http://ls:8080/data/local-files/?d=x/a.png"
    assert image_request_url(base, 7, "http://localhost:8080/data/upload/1/a.png") == f"{base}/data/upload/1/a.png"
    assert image_request_url("http://h/ls/", 7, "/ls/data/upload/a.png") == "http://h/ls/data/upload/a.png"
    assert image_request_url("http://h/ls", 7, "/data/upload/a.png") == "http://h/ls/data/upload/a.png"
    presign = f"{base}/tasks/7/presign/?fileuri=czM6Ly9idWNrZXQvZGlyL2EucG5n"
    assert image_request_url(base, 7, "s3://bucket/dir/a.png") == presign
    for bad in ("https://example.com/a.png", "", None, "a.png"):
        with pytest.raises(ImageError):
            image_request_url(base, 7, bad)


def test_only_an_explicit_url_goes_remote(monkeypatch, tmp_path):
    # A server's own LABEL_STUDIO_URL must never send an in-process export over HTTP: the URL is never read
    # from the environment, only the key is.
    from marker_ls_plugin.export import export_annotations_for_finetuning

    monkeypatch.setitem(os.environ, "LABEL_STUDIO_URL", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"^no project with id 1000000000$"):
        export_annotations_for_finetuning(10**9, str(tmp_path))
    with pytest.raises(ValueError, match="api_key without url"):
        export_annotations_for_finetuning(1, str(tmp_path), api_key="k")
