"""CSRF on a real server: Label Studio's DisableCSRF middleware switches Django's check off for every view,
so the plugin's state-changing pages, API and admin check it themselves (marker_ls_plugin/web/csrf.py)."""

from __future__ import annotations

import re

import pytest
import requests
from mls_helpers import wait_for
from mls_test_jobs import scenario

EVIL = "http://evil.example"


def cross_site(http, **headers) -> requests.Session:
    """What a page on another site can make the admin's browser send: the cookies, no token."""
    session = requests.Session()
    session.cookies.update(http.cookies)
    session.headers.update({"Origin": EVIL, **headers})
    return session


class Server:
    def __init__(self, label_studio, http):
        self.url, self.http = label_studio.url, http

    def project(self, title: str, played: str = "plain") -> int:
        """A project whose runs play the scripted run ``played`` (mls_test_jobs)."""
        response = self.http.post(f"{self.url}/api/projects/", json={"title": title, "description": scenario(played)},
                                  timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def start(self, project: int) -> dict:
        response = self.http.post(f"{self.url}/marker-ls/api/projects/{project}/runs/", json={}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def run(self, pk: int) -> dict:
        return self.http.get(f"{self.url}/marker-ls/api/runs/{pk}/", timeout=30).json()

    def wait(self, pk: int, check, message: str) -> dict:
        def reached():
            run = self.run(pk)
            return run if check(run) else None

        return wait_for(reached, 60, interval=0.3, message=message)

    def state(self, projects: list[int]) -> dict:
        """What the refused requests could have changed: runs, project settings, registered models."""
        runs = {p: [(r["id"], r["status"], r["cancel_requested"], r["trigger"]) for r in
                    self.http.get(f"{self.url}/marker-ls/api/projects/{p}/runs/", timeout=30).json()]
                for p in projects}
        ocr = {p: {k: v for k, v in self.http.get(f"{self.url}/marker-ls/api/projects/{p}/ocr/", timeout=30)
                   .json().items() if k in ("active_model", "retrain_every", "preannotate")} for p in projects}
        models = self.http.get(f"{self.url}/admin/marker_ls_plugin/ocrmodel/", timeout=30).text
        return {"runs": runs, "ocr": ocr, "models": re.findall(r'class="field-name">.*?</', models)}


@pytest.fixture(scope="module")
def server(label_studio, http):
    return Server(label_studio, http)


def unsafe_requests(server: Server, *, idle: int, slow_run: int, failed_run: int) -> list[tuple[str, str, dict]]:
    """Every state-changing plugin endpoint, as (method, path, requests keyword arguments)."""
    admin = "/admin/marker_ls_plugin"
    return [
        ("POST", f"/marker-ls/projects/{idle}/runs/start/", {}),
        ("POST", f"/marker-ls/runs/{slow_run}/cancel/", {}),
        ("POST", f"/marker-ls/runs/{failed_run}/retry/", {}),
        ("POST", f"/marker-ls/runs/{failed_run}/activate/", {}),
        ("POST", f"/marker-ls/api/projects/{idle}/runs/", {"json": {"config": {"max_steps": 3}}}),
        ("PATCH", f"/marker-ls/api/projects/{idle}/ocr/", {"json": {"retrain_every": 1, "preannotate": False}}),
        ("POST", f"/marker-ls/api/runs/{slow_run}/cancel/", {}),
        ("POST", f"/marker-ls/api/runs/{failed_run}/retry/", {}),
        ("POST", f"{admin}/ocrproject/", {"data": {"action": "start_runs", "_selected_action": [idle], "index": 0}}),
        ("POST", f"{admin}/finetunerun/", {"data": {"action": "cancel_runs", "_selected_action": [slow_run],
                                                     "index": 0}}),
        ("POST", f"{admin}/finetunerun/add/", {"data": {"project": idle, "config": "{}"}}),
        ("POST", f"{admin}/ocrproject/{idle}/change/", {"data": {
            "marker_ls_config-TOTAL_FORMS": 1, "marker_ls_config-INITIAL_FORMS": 0,
            "marker_ls_config-0-preannotate": "on", "marker_ls_config-0-retrain_every": 5}}),
        ("POST", f"{admin}/ocrmodel/add/", {"data": {"name": "csrf-planted", "engine": "surya", "kind": "base"}}),
    ]


@pytest.fixture
def scene(server):
    """A project with nothing running, one with a run in progress and one with a failed run."""
    idle, slow, failing = (server.project(f"csrf {name}", played) for name, played in
                           (("idle", "plain"), ("slow", "slow"), ("timeout", "timeout")))
    # One embedded executor thread: the failing run goes first, the slow one then holds it until cancelled.
    failed_run = server.start(failing)["id"]
    server.wait(failed_run, lambda run: run["status"] == "failed", "the scripted failure")
    slow_run = server.start(slow)["id"]
    server.wait(slow_run, lambda run: run["status"] == "running", "the slow run to start")
    yield {"idle": idle, "slow_run": slow_run, "failed_run": failed_run, "projects": [idle, slow, failing]}
    server.http.post(f"{server.url}/marker-ls/api/runs/{slow_run}/cancel/", timeout=30)  # frees the executor
    server.wait(slow_run, lambda run: run["status"] == "cancelled", "the slow run to stop")


@pytest.mark.parametrize("headers", [{}, {"Origin": None}, {"X-CSRFToken": "forged-token-0123456789abcdef0123456789"}],
                         ids=["evil-origin", "no-origin", "forged-token"])
def test_cross_site_requests_with_the_session_are_refused_and_change_nothing(server, http, scene, headers):
    attacker = cross_site(http, **headers)
    before = server.state(scene["projects"])
    requests_ = unsafe_requests(server, idle=scene["idle"], slow_run=scene["slow_run"],
                                failed_run=scene["failed_run"])
    answers = {(method, path): attacker.request(method, f"{server.url}{path}", allow_redirects=False, timeout=30,
                                                **kwargs) for method, path, kwargs in requests_}
    assert {key: response.status_code for key, response in answers.items()} == {key: 403 for key in answers}
    assert all("CSRF" in response.text for response in answers.values())
    assert server.state(scene["projects"]) == before
    assert not server.run(scene["slow_run"])["cancel_requested"]


def form_token(http, url: str, action: str) -> str:
    """The CSRF token of the form posting to ``action`` on the page at ``url``, as a browser submits it."""
    html = http.get(url, timeout=30).text
    form = re.search(rf'<form method="post" action="{re.escape(action)}">(.*?)</form>', html, re.S)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(1)).group(1)


def test_the_same_requests_with_the_token_work(server, http, scene):
    url, idle, slow = server.url, scene["idle"], scene["slow_run"]
    # The run page's own Cancel button, as a browser posts it: its form's token, the page's origin, no header.
    browser = cross_site(http, Origin=url, **{"X-CSRFToken": None})
    token = form_token(http, f"{url}/marker-ls/runs/{slow}/", f"/marker-ls/runs/{slow}/cancel/")
    page = browser.post(f"{url}/marker-ls/runs/{slow}/cancel/", data={"csrfmiddlewaretoken": token},
                        allow_redirects=False, timeout=30)
    assert page.status_code == 302, page.text[-500:]
    server.wait(slow, lambda run: run["status"] == "cancelled", "the page's cancel")
    page = http.post(f"{url}/marker-ls/projects/{idle}/runs/start/", allow_redirects=False, timeout=30)
    assert page.status_code == 302 and "/marker-ls/runs/" in page.headers["Location"]
    started = int(page.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    server.wait(started, lambda run: run["status"] == "succeeded", "the button's run")
    changelist = f"{url}/admin/marker_ls_plugin/ocrproject/"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', http.get(changelist, timeout=30).text).group(1)
    response = http.post(changelist, timeout=30, data={
        "csrfmiddlewaretoken": token, "action": "start_runs", "_selected_action": [idle], "index": 0})
    assert response.status_code == 200 and " started (" in response.text, response.text[-2000:]
    patched = http.patch(f"{url}/marker-ls/api/projects/{idle}/ocr/", json={"retrain_every": 7}, timeout=30)
    assert patched.status_code == 200 and patched.json()["retrain_every"] == 7
    retried = http.post(f"{url}/marker-ls/api/runs/{scene['failed_run']}/retry/", timeout=30)
    assert retried.status_code == 201 and retried.json()["id"] != scene["failed_run"]
    # The token passes; the view itself then refuses: the run produced no model.
    activate = http.post(f"{url}/marker-ls/runs/{scene['failed_run']}/activate/", timeout=30)
    assert activate.status_code == 400 and "produced no model" in activate.text
    runs = http.get(f"{url}/marker-ls/api/projects/{idle}/runs/", timeout=30).json()
    assert [run["trigger"] for run in runs] == ["admin", "button"]
    server.wait(runs[0]["id"], lambda run: run["status"] == "succeeded", "the admin's run")


def test_token_authenticated_api_needs_no_csrf_token(label_studio, server, http):
    key = http.get(f"{label_studio.url}/api/current-user/token", timeout=30).json()["token"]
    client = requests.Session()  # no cookies: what a script sends
    client.headers.update({"Authorization": f"Token {key}", "Origin": EVIL})
    project = server.project("csrf token api")
    response = client.post(f"{label_studio.url}/marker-ls/api/projects/{project}/runs/", json={}, timeout=30)
    assert response.status_code == 201, response.text
    cancelled = client.post(f"{label_studio.url}/marker-ls/api/runs/{response.json()['id']}/cancel/", timeout=30)
    assert cancelled.status_code in (200, 409)  # cancelled, or the short run had ended: the view answered either way
    patched = client.patch(f"{label_studio.url}/marker-ls/api/projects/{project}/ocr/", json={"retrain_every": 3},
                           timeout=30)
    assert patched.status_code == 200 and patched.json()["retrain_every"] == 3
