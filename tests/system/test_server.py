"""A real `marker-ls start` server: the embedded default (SQLite, no Redis), end to end over HTTP."""

from __future__ import annotations

import re

import requests
from mls_helpers import wait_for
from mls_test_jobs import scenario


def make_project(label_studio, http, title, played="plain"):
    """A project whose runs play the scripted run ``played`` (mls_test_jobs)."""
    response = http.post(f"{label_studio.url}/api/projects/", json={"title": title, "description": scenario(played)},
                         timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_run(label_studio, http, run_id, statuses, timeout=60):
    def done():
        run = http.get(f"{label_studio.url}/marker-ls/api/runs/{run_id}/", timeout=30).json()
        return run if run["status"] in statuses else None

    return wait_for(done, timeout, interval=0.3, message=f"run {run_id} to reach {statuses}")


def test_health_answers(label_studio):
    response = requests.get(f"{label_studio.url}/health", timeout=10)
    assert response.json() == {"status": "UP"}


def test_first_start_reports_the_admin_and_token_policy(label_studio):
    log = label_studio.log_path.read_text()
    assert "Created the first admin user: admin@example.com" in log
    assert "Legacy API tokens are enabled" in log
    assert "System check identified no issues" in log


def test_plugin_page_renders_inside_label_studio_chrome(label_studio, http):
    response = http.get(f"{label_studio.url}/marker-ls/", timeout=30)
    assert response.status_code == 200
    html = response.text
    assert '<div class="app-wrapper"></div>' in html  # Label Studio's SPA shell and top bar
    assert "react-app/main.js" in html
    content = html.split('<template id="main-content">', 1)[1].split("</template>", 1)[0]
    assert 'data-mls-page="dashboard"' in content and "Recent fine-tune runs" in content
    assert "/marker-ls/static/marker_ls.js" in html
    assert http.get(f"{label_studio.url}/marker-ls/static/marker_ls.js", timeout=30).status_code == 200


def test_pages_need_login(label_studio):
    response = requests.get(f"{label_studio.url}/marker-ls/", timeout=30, allow_redirects=False)
    assert response.status_code == 302 and "/user/login" in response.headers["Location"]
    api = requests.get(f"{label_studio.url}/marker-ls/api/runs/1/", timeout=30)
    assert api.status_code in (401, 403)


def test_admin_lists_the_plugin_models(label_studio, http):
    index = http.get(f"{label_studio.url}/admin/marker_ls_plugin/", timeout=30)
    assert index.status_code == 200
    listed = set(re.findall(r'href="/admin/marker_ls_plugin/(\w+)/"', index.text))
    assert listed == {"ocrmodel", "finetunerun", "ocrproject"}
    for name in listed:
        assert http.get(f"{label_studio.url}/admin/marker_ls_plugin/{name}/", timeout=30).status_code == 200
    assert http.get(f"{label_studio.url}/admin/marker_ls_plugin/finetunerun/add/", timeout=30).status_code == 200


def test_label_studio_project_api_still_works(label_studio, http):
    project_id = make_project(label_studio, http, "Label Studio still works")
    imported = http.post(f"{label_studio.url}/api/projects/{project_id}/import", timeout=30,
                         json=[{"image": "/static/images/logo.png"}, {"image": "/static/images/logo.png"}])
    assert imported.status_code == 201, imported.text
    tasks = http.get(f"{label_studio.url}/api/tasks", params={"project": project_id}, timeout=30).json()
    assert len(tasks["tasks"]) == 2
    assert http.get(f"{label_studio.url}/projects/", timeout=30).status_code == 200
    assert http.get(f"{label_studio.url}/api/version/", timeout=30).status_code == 200


def test_plugin_routes_win_over_unanchored_label_studio_patterns(label_studio, http):
    # Label Studio's r'health/' would match this path anywhere; the plugin's routes come first.
    response = http.get(f"{label_studio.url}/marker-ls/health/", timeout=30)
    assert response.status_code == 404


def test_embedded_run_succeeds_without_redis(label_studio, http):
    project_id = make_project(label_studio, http, "embedded succeed")
    response = http.post(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/",
                         json={"config": {"max_steps": 3}}, timeout=30)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["queue_backend"] == "embedded" and run["trigger"] == "api"
    assert run["status"] in ("queued", "running", "succeeded")  # the request never executes the run
    run = wait_run(label_studio, http, run["id"], {"succeeded", "failed"})
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == 1.0 and run["step"] == 3 and len(run["metrics"]) == 3
    page = http.get(f"{label_studio.url}/marker-ls/runs/{run['id']}/", timeout=30)
    assert "Succeeded" in page.text and "step 3 done" in page.text


def test_embedded_run_failure_and_cancel(label_studio, http):
    failing = make_project(label_studio, http, "embedded fail", "fail")
    run = http.post(f"{label_studio.url}/marker-ls/api/projects/{failing}/runs/", json={}, timeout=30).json()
    run = wait_run(label_studio, http, run["id"], {"failed", "succeeded"})
    assert run["error"] == "RuntimeError: scripted failure: the GPU caught fire"

    slow = make_project(label_studio, http, "embedded slow", "slow")
    run = http.post(f"{label_studio.url}/marker-ls/api/projects/{slow}/runs/", json={}, timeout=30).json()
    again = http.post(f"{label_studio.url}/marker-ls/api/projects/{slow}/runs/", json={}, timeout=30)
    assert again.status_code == 200 and again.json()["id"] == run["id"]
    wait_for(lambda: http.get(f"{label_studio.url}/marker-ls/api/runs/{run['id']}/", timeout=30).json()["step"] >= 3,
             60, message="progress")
    cancelled = http.post(f"{label_studio.url}/marker-ls/api/runs/{run['id']}/cancel/", timeout=30).json()
    assert cancelled["cancel_requested"]
    run = wait_run(label_studio, http, run["id"], {"cancelled", "failed", "succeeded"})
    assert run["status"] == "cancelled" and run["step"] < run["total_steps"]


def test_bad_config_is_a_clear_400(label_studio, http):
    project_id = make_project(label_studio, http, "bad config")
    response = http.post(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/",
                         json={"config": {"learning_rate": -1}}, timeout=30)
    assert response.status_code == 400
    assert "learning_rate must be positive" in response.text


def test_retrain_button_starts_a_run(label_studio, http):
    project_id = make_project(label_studio, http, "button succeed")
    response = http.post(f"{label_studio.url}/marker-ls/projects/{project_id}/runs/start/", timeout=30)
    assert response.status_code == 200 and "/marker-ls/runs/" in response.url
    run_id = int(response.url.rstrip("/").rsplit("/", 1)[1])
    run = wait_run(label_studio, http, run_id, {"succeeded", "failed"})
    assert run["trigger"] == "button" and run["status"] == "succeeded"


def test_admin_action_starts_a_run(label_studio, http):
    project_id = make_project(label_studio, http, "admin action succeed")
    url = f"{label_studio.url}/admin/marker_ls_plugin/ocrproject/"
    page = http.get(url, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = http.post(url, timeout=30, headers={"Referer": url}, data={
        "csrfmiddlewaretoken": token, "action": "start_runs", "_selected_action": [str(project_id)], "index": "0"})
    assert response.status_code == 200 and "run" in response.text and "started" in response.text
    runs = http.get(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/", timeout=30).json()
    assert len(runs) == 1 and runs[0]["trigger"] == "admin"
    wait_run(label_studio, http, runs[0]["id"], {"succeeded"})
