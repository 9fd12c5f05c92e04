"""Where Label Studio reaches the in-process ML backend: its URL, and whether a backend's URL is it.

Kept apart from ``connector.py`` (which imports the domain modules) so that domain code creating the
project's ML backend row can name the URL without importing the connector.
"""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings

IN_PROCESS_PATH = "/marker-ls/ml/"


def in_process_url() -> str:
    """The URL to give Label Studio for the in-process backend."""
    host = (getattr(settings, "HOSTNAME", "") or "http://localhost:8080").rstrip("/")
    return f"{host}{IN_PROCESS_PATH}"


def is_in_process(url: str | None) -> bool:
    return bool(url) and (urlparse(url).path.rstrip("/") + "/") == IN_PROCESS_PATH
