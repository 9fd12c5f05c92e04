"""Helpers shared by the tests (a module of its own: Label Studio ships a top-level ``conftest``)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the checkout
CI = os.environ.get("CI", "").lower() == "true"
SECRET_KEY = "marker-ls-tests-not-secret"


def clean_environ() -> dict[str, str]:
    prefixes = ("MARKER_LS_", "DJANGO_DB", "POSTGRE_", "DATABASE_NAME", "LABEL_STUDIO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({
        "DJANGO_SETTINGS_MODULE": "marker_ls_plugin.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "SECRET_KEY": SECRET_KEY,
        "MARKER_LS_HEARTBEAT_INTERVAL": "1",
        "MARKER_LS_HEARTBEAT_TIMEOUT": "6",
        "MARKER_LS_RUN_FUNCTION": "mls_test_jobs.scripted_run",
        # Real text offline: rapidocr ships its models; surya tests load tiny models explicitly.
        "MARKER_LS_ENGINE": "rapidocr",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "HF_HUB_OFFLINE": "1",
    })
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process started in its own session, and everything it started, by its pid."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def status_kb(field: str) -> int:
    """A field of this process's /proc status in kB: ``VmRSS`` (resident now), ``VmHWM`` (its peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class LabelStudio:
    """A running `marker-ls start` server and the credentials of its admin."""

    email = "admin@example.com"
    password = "marker-ls-test-password"

    def __init__(self, url: str, proc: subprocess.Popen, log_path: Path, data_dir: Path):
        self.url, self.proc, self.log_path, self.data_dir = url, proc, log_path, data_dir

    def session(self):
        """A requests session logged in as the admin (Label Studio's own login form)."""
        import requests

        session = requests.Session()
        session.get(f"{self.url}/user/login/", timeout=30)
        response = session.post(f"{self.url}/user/login/", timeout=30, data={
            "email": self.email, "password": self.password,
            "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
        })
        assert response.ok and "/user/login" not in response.url, response.text[-500:]
        # As Label Studio's frontend does: the token from the cookie (rotated at login) on every unsafe request.
        session.headers["X-CSRFToken"] = session.cookies.get("csrftoken", "")
        return session

    def log_tail(self) -> str:
        return self.log_path.read_text()[-4000:]

    def wait_until_up(self, timeout: float = 300) -> None:
        """Wait for /health to answer; fail with the log if the server process exits first."""
        import requests

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"Label Studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return requests.get(f"{self.url}/health", timeout=2).ok
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
                return False

        wait_for(up, timeout=timeout, interval=0.5, message="Label Studio to answer /health")


def start_marker_ls(env: dict[str, str], data_dir: Path, log_path: Path, *args: str) -> LabelStudio:
    """`marker-ls start` as README's first command runs it, on a free loopback port, up and answering.

    The caller stops it with stop_process(server.proc), also when a test fails; a server that exits before it
    answers fails here with its log.
    """
    import sys

    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "marker_ls_plugin.cli", "start", "--port", str(port), "--host", "127.0.0.1",
             "--data-dir", str(data_dir), *args],
            env=env, cwd=TESTS.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LabelStudio(f"http://127.0.0.1:{port}", proc, log_path, data_dir)
    try:
        server.wait_until_up()
    except BaseException:
        stop_process(proc)
        raise
    return server


def import_rendered_page(server, http, title: str, lines: list[str], size=(900, 240), font_size: int = 30) -> dict:
    """A project with the OCR preset on ``server`` and one rendered page imported through Label Studio's API.

    Returns ``project`` (its JSON), ``task`` (the imported task's id), ``polygons`` (each line's ground truth) and
    ``size`` (the page's).
    """
    image, polygons = render_page(lines, size=size, font_size=font_size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = http.post(f"{server.url}/api/projects/", timeout=30,
                         json={"title": title, "label_config": OCR_PRESET_CONFIG})
    assert response.status_code == 201, response.text
    project = response.json()
    response = http.post(f"{server.url}/api/projects/{project['id']}/import", timeout=60,
                         files={"file": ("page.png", buffer.getvalue(), "image/png")},
                         params={"return_task_ids": "true"})
    assert response.status_code == 201, response.text
    [task_id] = response.json()["task_ids"]
    return {"project": project, "task": task_id, "polygons": polygons, "size": image.size}

