"""The plugin's pages in a real browser: headless Chromium (Debian's package) driven by Playwright.

Proves what HTTP-level tests cannot: Label Studio's React SPA renders the plugin's content under its
own top bar, and marker_ls.js refreshes a run page live and follows a cancel through to the end.
Chromium comes from `make test-deps` (apt); Playwright's own browser download is never used.
"""

from __future__ import annotations

import re

import pytest
from mls_chromium import PluginErrors, _browser_available, browser, login  # noqa: F401  (fixtures)
from mls_helpers import wait_for
from mls_test_jobs import scenario


@pytest.fixture
def page(browser, label_studio):  # noqa: F811
    """A fresh browser context, logged in through Label Studio's own login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.plugin_errors = PluginErrors(page)
        login(page, label_studio)
        yield page
    finally:
        context.close()


def test_dashboard_renders_inside_label_studio_chrome(page, label_studio, tmp_path):
    page.goto(f"{label_studio.url}/marker-ls/")
    content = page.locator(".app-wrapper .mls-page[data-mls-page=dashboard]")
    content.wait_for(state="visible")
    assert content.locator("h1.mls-title").inner_text() == "Marker OCR"
    assert content.locator("#mls-runs").is_visible() and content.locator("#mls-projects").is_visible()
    # Label Studio's own top bar: the SPA's menu header, with its main-menu trigger and the user's badge.
    top_bar = page.locator(".app-wrapper .lsf-menu-header")
    top_bar.wait_for(state="visible")
    assert top_bar.locator(".main-menu-trigger").is_visible()
    assert top_bar.locator(".lsf-menu-header__user").get_attribute("title") == label_studio.email
    # The plugin's content sits below the bar, not over or under it.
    bar, body = top_bar.bounding_box(), content.bounding_box()
    assert body["y"] >= bar["y"] + bar["height"] - 1, (bar, body)
    page.screenshot(path=str(tmp_path / "dashboard.png"))
    assert not page.plugin_errors.errors


def test_run_page_updates_live_and_cancels(page, label_studio, http, tmp_path):
    project = {"title": "browser slow", "description": scenario("slow")}
    response = http.post(f"{label_studio.url}/api/projects/", json=project, timeout=30)
    assert response.status_code == 201, response.text
    project_id = response.json()["id"]
    response = http.post(f"{label_studio.url}/marker-ls/api/projects/{project_id}/runs/", json={}, timeout=30)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    try:
        page.goto(f"{label_studio.url}/marker-ls/runs/{run_id}/")
        run = page.locator(".app-wrapper .mls-run")
        run.wait_for(state="visible")
        step = run.locator("[data-field=step]")
        page.evaluate("window.__mlsNotReloaded = true")  # gone if the page reloads

        def step_value() -> int:
            return int(step.inner_text().strip())

        # Two increases in a row: marker_ls.js keeps polling (every 2 s), with no reload in between.
        first = step_value()
        second = wait_for(lambda: step_value() > first and step_value(), 10, message="the step counter to move")
        wait_for(lambda: step_value() > second, 10, message="the step counter to move again")
        assert page.evaluate("window.__mlsNotReloaded === true"), "the page reloaded instead of updating in place"
        assert run.locator("progress[data-field=progress]").evaluate("el => el.value") > 0
        # A polled status reads as the server renders it (its label, and the class that colours it).
        status = run.locator("[data-field=status]")
        assert status.inner_text().strip() == "Running"
        assert "mls-status-running" in status.get_attribute("class").split()
        page.screenshot(path=str(tmp_path / "run-running.png"))

        run.get_by_role("button", name="Cancel run").click()
        # The run stops at its next step; marker_ls.js sees it finish and reloads the final page.
        status.filter(has_text=re.compile(r"^\s*Cancelled\s*$")).wait_for(state="visible", timeout=20_000)
        assert run.get_by_role("button", name="Cancel run").count() == 0
        page.screenshot(path=str(tmp_path / "run-cancelled.png"))
        assert not page.plugin_errors.errors
    finally:  # never leave a 150 s run going in the shared server
        http.post(f"{label_studio.url}/marker-ls/api/runs/{run_id}/cancel/", timeout=30)
    final = http.get(f"{label_studio.url}/marker-ls/api/runs/{run_id}/", timeout=30).json()
    assert final["status"] == "cancelled" and final["step"] < final["total_steps"]
