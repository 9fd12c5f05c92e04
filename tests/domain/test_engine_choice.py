"""Which engine pre-annotates a project: "auto", the checks that say why an engine cannot load and what to do,
Label Studio's Model tab, the project's OCR page and the API's ``engine``."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from mls_browser import logged_in
from mls_factories import make_user, upload_task
from mls_helpers import CI, clean_environ
from mls_render import render_page
from rest_framework.test import APIClient

from marker_ls_plugin.domain import activation, engines, preannotation, predictions, projects
from marker_ls_plugin.domain.engines import engine_problem
from marker_ls_plugin.domain.first_start import create_ocr_project
from marker_ls_plugin.domain.projects import engine_options, model_choice
from marker_ls_plugin.models import OCRModel, ProjectConfig
from marker_ls_plugin.ocr import availability
from marker_ls_plugin.ocr.surya import SuryaEngine
from marker_ls_plugin.ocr.types import EngineUnavailable

FIX_WORDS = ("MARKER_LS_SURYA_RECOGNITION_CHECKPOINT", "MARKER_LS_SURYA_DETECTION_CHECKPOINT", "MODEL_CACHE_DIR",
             "marker-ls models scan", "restart", "RapidOCR", "vocab_math.json", "text_recognition/2025_09_23")


@pytest.fixture(autouse=True)
def fresh_decision():
    engines.clear_auto_engine()
    yield
    engines.clear_auto_engine()


def marker_ls(**values):
    """The test process's MARKER_LS with ``values`` changed."""
    return override_settings(MARKER_LS={**django_settings.MARKER_LS, **values})


@pytest.fixture
def surya_cache(tmp_path, monkeypatch):
    """An empty surya cache, for surya's settings and the plugin's; downloads off (HF_HUB_OFFLINE) unless a test
    turns them on."""
    from huggingface_hub import constants
    from surya.settings import settings as surya_settings

    cache = tmp_path / "datalab-cache"
    monkeypatch.setattr(surya_settings, "MODEL_CACHE_DIR", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with override_settings(SURYA_MODEL_CACHE_DIR=str(cache)):
        yield cache


def refused_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def http_404():
    """A local HTTP server that answers every request 404: its host answers, a download fails."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def auto_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == engines.__name__ and "\"auto\" is" in r.msg]


# --- "auto" --------------------------------------------------------------------------------------------------------


def test_auto_without_weights_offline_is_rapidocr_decided_and_logged_once(surya_cache, caplog):
    project = create_ocr_project(make_user(), "auto offline")
    caplog.set_level(logging.INFO, logger=engines.__name__)
    with marker_ls(ENGINE="auto", SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        choices = [model_choice(project) for _ in range(3)]
    assert {(c.engine, c.version, c.automatic) for c in choices} == {("rapidocr", "marker-rapidocr-base", True)}
    reason = choices[0].reason
    assert "surya's weights are not on this machine" in reason and "HF_HUB_OFFLINE" in reason
    assert str(surya_cache) in reason
    [logged] = auto_log(caplog)
    assert "rapidocr" in logged and reason in logged


def test_auto_is_decided_once_by_concurrent_callers(surya_cache, caplog, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    decide, calls = engines._decide, []
    monkeypatch.setattr(engines, "_decide", lambda: calls.append(1) or decide())
    caplog.set_level(logging.INFO, logger=engines.__name__)
    with marker_ls(ENGINE="auto", SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        with ThreadPoolExecutor(8) as pool:
            answers = set(pool.map(lambda _: engines.auto_engine(), range(32)))
    assert len(answers) == 1 and len(calls) == 1 and len(auto_log(caplog)) == 1


def auto_with_download_host(url: str, monkeypatch) -> tuple[str, str]:
    """The "auto" decision with no weights on disk, downloads on, and surya's download host at ``url``."""
    from huggingface_hub import constants
    from surya.settings import settings as surya_settings

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(surya_settings, "S3_BASE_URL", url)
    with marker_ls(ENGINE="auto", SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        return engines.auto_engine()


def test_auto_is_rapidocr_when_the_download_host_does_not_answer(surya_cache, monkeypatch):
    url = refused_url()
    engine, reason = auto_with_download_host(url, monkeypatch)
    assert engine == "rapidocr" and f"cannot be downloaded from {url}: connection refused" in reason


def test_auto_is_surya_when_the_download_host_answers(surya_cache, monkeypatch, http_404):
    engine, reason = auto_with_download_host(http_404, monkeypatch)
    assert engine == "surya" and f"downloaded from {http_404}" in reason


def test_auto_is_surya_with_local_weights_and_they_load(surya_cache, tiny_surya, caplog):
    project = create_ocr_project(make_user(), "auto surya")
    caplog.set_level(logging.INFO, logger=engines.__name__)
    with marker_ls(ENGINE="auto", SURYA_RECOGNITION_CHECKPOINT=str(tiny_surya["recognition"]),
                   SURYA_DETECTION_CHECKPOINT=str(tiny_surya["detection"]), TORCH_DEVICE="cpu"):
        choice = model_choice(project)
        assert model_choice(project) == choice
        assert (choice.engine, choice.version, choice.automatic) == ("surya", "marker-surya-base", True)
        assert "surya's weights are on this machine" in choice.reason
        assert engine_problem(choice.engine, choice.options) is None
        task = upload_task(project, render_page(["Hello there"], size=(600, 120), font_size=28)[0])
        assert predictions.preannotate_tasks(project.pk, [task.pk])["predicted"] == 1
    assert task.predictions.get().model_version == "marker-surya-base"
    assert len(auto_log(caplog)) == 1


OFFLINE_DECISION = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "marker_ls_plugin.settings"
import django
django.setup()
from marker_ls_plugin.domain.engines import auto_engine, engine_problem
engine, reason = auto_engine()
print(json.dumps({"engine": engine, "reason": reason, "surya": engine_problem("surya")}))
"""


def test_a_fresh_install_without_network_decides_rapidocr_and_says_why(tmp_path):
    """The issue's machine: no surya weights, no network, nothing configured (not even HF_HUB_OFFLINE)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if CI:
            pytest.fail("this test needs root and unshare(1) to cut the network")
        pytest.skip("needs root and unshare(1)")
    env = {k: v for k, v in clean_environ().items()
           if k not in ("MARKER_LS_ENGINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}  # whatever ran before
    env.update({"MODEL_CACHE_DIR": str(tmp_path / "cache"), "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "data"),
                "DJANGO_DB": "sqlite", "DATABASE_NAME": str(tmp_path / "db.sqlite3")})
    command = f"ip link set lo up && exec {sys.executable} -c '{OFFLINE_DECISION}'"
    result = subprocess.run(["unshare", "--net", "sh", "-c", command], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["engine"] == "rapidocr"
    assert "cannot be downloaded from https://models.datalab.to: no network" in seen["reason"]
    assert "could not be downloaded from https://models.datalab.to/text_recognition/2025_09_23: no network" in \
        seen["surya"]
    assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in seen["surya"] and "\n" not in seen["surya"]


def test_a_project_or_site_engine_is_not_automatic():
    project = create_ocr_project(make_user(), "explicit")
    with marker_ls(ENGINE="rapidocr"):
        choice = model_choice(project)
        assert (choice.engine, choice.automatic) == ("rapidocr", False) and "MARKER_LS_ENGINE" in choice.reason
        ProjectConfig.objects.filter(project=project).update(engine="surya")
        choice = model_choice(project)
        assert (choice.engine, choice.automatic, choice.version) == ("surya", False, "marker-surya-base")


def test_an_unknown_site_engine_is_a_system_check_error(tmp_path):
    from marker_ls_plugin.wiring.checks import check_configuration

    with override_settings(MARKER_LS={"REDIS_URL": None, "MODELS_DIR": str(tmp_path), "ENGINE": "tesseract"}):
        [message] = check_configuration()
    assert message.id == "marker_ls.E006" and "MARKER_LS_ENGINE" in message.msg + message.hint


# --- what is wrong, and what to do ---------------------------------------------------------------------------------


def test_engine_problem_says_which_variables_to_set_and_how_to_register_a_model(surya_cache, tmp_path):
    assert engine_problem("rapidocr") is None
    with marker_ls(SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None,
                   MODELS_DIR=str(tmp_path / "models")):
        problem = engine_problem("surya", engine_options("surya"))
    assert problem and "HF_HUB_OFFLINE" in problem and str(surya_cache) in problem
    for words in (*FIX_WORDS, str(tmp_path / "models" / "recognition")):
        assert words in problem, words
    assert "MARKER_LS[" not in problem and "\n" not in problem

    missing = str(tmp_path / "nowhere")
    problem = engine_problem("surya", {"recognition_checkpoint": missing})
    assert f"checkpoint {missing} is not a checkpoint directory" in problem
    assert "Set MARKER_LS_SURYA_RECOGNITION_CHECKPOINT to a directory" in problem


def test_a_failed_download_is_one_line(surya_cache, monkeypatch, http_404):
    from huggingface_hub import constants
    from surya.settings import settings as surya_settings

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(surya_settings, "S3_BASE_URL", http_404)
    with pytest.raises(EngineUnavailable) as error:
        SuryaEngine(device="cpu").load()
    message = str(error.value)
    assert f"could not be downloaded from {http_404}/text_recognition/2025_09_23: HTTP 404 (HTTPError)" in message
    assert "\n" not in message and "Traceback" not in message


def test_a_name_that_does_not_resolve_reads_no_network():
    import requests

    with pytest.raises(requests.RequestException) as error:
        requests.get("http://marker-ls-test.invalid/manifest.json", timeout=5)
    assert availability.network_reason(error.value) == "no network (NameResolutionError)"


# --- Label Studio's Model tab --------------------------------------------------------------------------------------


def test_the_model_tab_shows_the_engine_error_then_the_version_once_fixed(surya_cache):
    from ml.models import MLBackend, MLBackendState

    project = create_ocr_project(make_user(), "model tab")
    backend = MLBackend.objects.get(project=project, title=projects.ML_BACKEND_TITLE)
    ProjectConfig.objects.filter(project=project).update(engine="surya")
    with marker_ls(SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        backend.update_state()  # Label Studio's own: health, then setup, then the state it saves
    backend.refresh_from_db()
    assert backend.state == MLBackendState.ERROR
    assert "The OCR engine surya cannot load" in backend.error_message
    assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in backend.error_message
    assert backend.error_message.endswith(f"/marker-ls/projects/{project.pk}/")

    activation.choose_engine(project, "rapidocr")
    backend.update_state()
    backend.refresh_from_db()
    assert (backend.state, backend.error_message) == (MLBackendState.CONNECTED, None)
    assert backend.model_version == "marker-rapidocr-base"


# --- the project's OCR page ----------------------------------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch):
    """Task ids the pre-annotation queue was given (nothing runs)."""
    seen: list[int] = []
    monkeypatch.setattr(preannotation, "schedule", lambda project, ids, **kw: seen.extend(ids) or len(ids))
    return seen


def page_url(project) -> str:
    return f"/marker-ls/projects/{project.pk}/"


def test_the_page_shows_why_the_engine_cannot_load_and_the_fix(surya_cache, queued):
    owner = make_user()
    project = create_ocr_project(owner, "page broken surya")
    ProjectConfig.objects.filter(project=project).update(engine="surya", engine_error="surya could not load")
    with marker_ls(SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        response = logged_in(owner).get(page_url(project))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-mls-page="project"' in html and "marker-surya-base" in html and "chosen for this project" in html
    assert "The engine surya cannot load here." in html and "surya could not load" in html
    for words in FIX_WORDS:
        assert words in html, words
    assert "Use RapidOCR for this project" in html

    dashboard = logged_in(owner).get("/marker-ls/").content.decode()
    assert f'href="{page_url(project)}"' in dashboard


def test_the_form_switches_engine_and_queues_what_lacks_a_prediction(surya_cache, queued):
    owner = make_user()
    project = create_ocr_project(owner, "page switch")
    ProjectConfig.objects.filter(project=project).update(engine="surya", engine_error="surya could not load")
    page = render_page(["Pending page"], size=(600, 120), font_size=28)[0]
    tasks = [upload_task(project, page, name=f"p{i}.png") for i in range(2)]
    queued.clear()  # whatever the import hook queued
    client = logged_in(owner)
    with marker_ls(SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        html = client.get(page_url(project)).content.decode()
    assert '<span data-field="done">0</span>' in html and '<span data-field="pending">2</span>' in html

    response = client.post(f"{page_url(project)}engine/", {"choice": "rapidocr"})
    assert response.status_code == 302 and response["Location"] == page_url(project)
    config = ProjectConfig.objects.get(project=project)
    assert (config.engine, config.active_model, config.engine_error) == ("rapidocr", None, "")
    assert sorted(queued) == [task.pk for task in tasks]
    html = client.get(page_url(project)).content.decode()
    assert "marker-rapidocr-base" in html and "cannot load" not in html and "Use RapidOCR" not in html

    model = OCRModel.objects.create(name="page-picked", engine="rapidocr", organization=owner.active_organization)
    queued.clear()
    assert client.post(f"{page_url(project)}engine/", {"choice": f"model-{model.pk}"}).status_code == 302
    assert ProjectConfig.objects.get(project=project).active_model == model
    assert sorted(queued) == [task.pk for task in tasks]  # nothing predicted "page-picked" yet

    queued.clear()
    with marker_ls(ENGINE="auto"):
        assert client.post(f"{page_url(project)}engine/", {"choice": "auto"}).status_code == 302
    config = ProjectConfig.objects.get(project=project)
    assert (config.engine, config.active_model) == ("", None) and sorted(queued) == [task.pk for task in tasks]
    assert client.post(f"{page_url(project)}engine/", {"choice": "model-987654321"}).status_code == 400


def test_another_organization_gets_404(queued):
    project = create_ocr_project(make_user(), "page private")
    other = logged_in(make_user())
    assert other.get(page_url(project)).status_code == 404
    assert other.post(f"{page_url(project)}engine/", {"choice": "rapidocr"}).status_code == 404
    assert ProjectConfig.objects.get(project=project).engine == ""
    stranger_model = OCRModel.objects.create(name="other-org-model", engine="rapidocr",
                                             organization=make_user().active_organization)
    owner = project.created_by
    assert logged_in(owner).post(f"{page_url(project)}engine/",
                                 {"choice": f"model-{stranger_model.pk}"}).status_code == 400
    assert logged_in(owner).get(page_url(project)).content.decode().count("other-org-model") == 0


# --- the API -------------------------------------------------------------------------------------------------------


def test_the_api_patches_the_engine_and_reports_the_problem(surya_cache, queued):
    owner = make_user()
    project = create_ocr_project(owner, "api engine")
    client = APIClient()
    client.force_authenticate(owner)
    url = f"/marker-ls/api/projects/{project.pk}/ocr/"
    with marker_ls(ENGINE="auto", SURYA_RECOGNITION_CHECKPOINT=None, SURYA_DETECTION_CHECKPOINT=None):
        data = client.get(url).json()
        assert (data["engine"], data["engine_automatic"], data["engine_problem"]) == ("rapidocr", True, None)
        assert "HF_HUB_OFFLINE" in data["engine_reason"]

        data = client.patch(url, {"engine": "surya"}, format="json").json()
        assert (data["engine"], data["engine_automatic"], data["model_version"]) == ("surya", False,
                                                                                     "marker-surya-base")
        assert "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT" in data["engine_problem"]
        assert ProjectConfig.objects.get(project=project).engine == "surya"

        data = client.patch(url, {"engine": "auto"}, format="json").json()
        assert (data["engine"], data["engine_automatic"]) == ("rapidocr", True)
        assert ProjectConfig.objects.get(project=project).engine == ""
    response = client.patch(url, {"engine": "tesseract"}, format="json")
    assert response.status_code == 400 and "engine" in response.json()["validation_errors"]
