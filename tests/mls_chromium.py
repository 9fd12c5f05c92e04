"""Headless Chromium (Debian's package) driven by Playwright, for the browser tests: the fixtures they share.

A module of its own so that every browser test module imports the same fixtures (``_browser_available`` is
autouse in the modules that import it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mls_helpers import CI

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PLUGIN_JS = "/marker-ls/static/marker_ls.js"


def _missing(message: str):
    if CI:
        pytest.fail(f"{message}; the browser tests are required under CI=true: run `make test-deps`", pytrace=False)
    pytest.skip(f"{message}: run `make test-deps`")


@pytest.fixture(scope="session", autouse=True)
def _browser_available():
    """Checked before the session's Label Studio server starts (autouse goes first within a scope)."""
    if not CHROMIUM.exists():
        _missing(f"Chromium is not installed at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the Python package playwright is not installed")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


def login(page, server) -> None:
    """Log ``page`` in to ``server`` through Label Studio's own login form."""
    page.goto(f"{server.url}/user/login/")
    page.fill("#login-form input[name=email]", server.email)
    page.fill("#login-form input[name=password]", server.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)


class PluginErrors:
    """Console errors and uncaught exceptions that come from the plugin's own pages and JS.

    Label Studio's bundles log their own noise (CSP report-only notices, a 404 for /heidi-tips); only
    what points at marker_ls.js or a /marker-ls/ URL counts.
    """

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._pageerror)

    def _console(self, message):
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if "/marker-ls/" in where or PLUGIN_JS in message.text:
            self.errors.append(f"console.error at {where}: {message.text}")

    def _pageerror(self, error):
        stack = error.stack or ""
        if PLUGIN_JS in stack or "marker_ls" in stack:
            self.errors.append(f"uncaught: {error}\n{stack}")
