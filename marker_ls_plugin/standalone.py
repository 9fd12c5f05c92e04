"""``marker-ls ml-backend``: the ML backend protocol as its own service, with no database.

Label Studio calls it like any ML backend. It reads task images over HTTP from Label Studio with an API
token, and pre-annotates with the engine and checkpoint given on its command line (or the newest model
under ``<models dir>/recognition/``, as the guide describes for fine-tuned models).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urljoin, urlparse
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from marker_ls_plugin import ml_backend
from marker_ls_plugin.ocr.types import ImageError

logger = logging.getLogger(__name__)

MAX_BODY = 50 * 1024 * 1024


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def newest_model(models_dir: str | None) -> Path | None:
    """The most recently changed model directory under ``<models_dir>/recognition/``."""
    if not models_dir:
        return None
    candidates = [p for p in (Path(models_dir) / "recognition").glob("*") if (p / "config.json").is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


class Service:
    """The protocol's state: the predictor, where Label Studio is, and how to authenticate."""

    def __init__(self, predictor: ml_backend.Predictor, label_studio_url: str | None, api_key: str | None,
                 basic_auth: str | None = None, max_pixels: int = 89_478_485, allow_external_urls: bool = False):
        self.predictor = predictor
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.max_pixels = max_pixels
        self.allow_external_urls = allow_external_urls
        self._lock = threading.Lock()

    def remember_setup(self, payload: dict) -> ml_backend.Predictor:
        # Label Studio's /setup names itself and, for legacy tokens, hands over a token.
        with self._lock:
            self.label_studio_url = self.label_studio_url or (payload.get("hostname") or "").rstrip("/") or None
            self.api_key = self.api_key or payload.get("access_token") or None
        return self.predictor

    def image_url(self, task: dict) -> str:
        data = task.get("data") or {}
        value = next((v for v in data.values() if isinstance(v, str) and v), None)
        if value is None:
            raise ImageError(f"task {task.get('id')} has no image URL in its data")
        if value.startswith("/"):
            if not self.label_studio_url:
                raise ImageError("Label Studio's URL is unknown: start with --label-studio-url")
            return urljoin(self.label_studio_url + "/", value.lstrip("/"))
        parsed = urlparse(value)
        same_host = self.label_studio_url and value.startswith(self.label_studio_url + "/")
        if parsed.scheme in ("http", "https") and (same_host or self.allow_external_urls):
            return value
        raise ImageError(f"not fetching {value!r}: only Label Studio's own files (or --allow-external-urls)")

    def load_image(self, task: dict):
        import requests

        from marker_ls_plugin.ocr.images import open_image

        url = self.image_url(task)
        headers = {"Authorization": f"Token {self.api_key}"} if self.api_key and self.label_studio_url and \
            url.startswith(self.label_studio_url) else {}
        try:
            response = requests.get(url, headers=headers, timeout=30)
        except requests.RequestException as exc:
            raise ImageError(f"cannot download {url}: {exc}") from exc
        if response.status_code != 200:
            raise ImageError(f"cannot download {url}: HTTP {response.status_code}")
        return open_image(response.content, max_pixels=self.max_pixels)

    def authorized(self, environ: dict) -> bool:
        if not self.basic_auth:
            return True
        return ml_backend.basic_auth_matches(environ.get("HTTP_AUTHORIZATION"), self.basic_auth)

    def __call__(self, environ: dict, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if not self.authorized(environ):
            return _reply(start_response, 401, {"detail": "basic authentication required"},
                          [("WWW-Authenticate", 'Basic realm="marker-ls"')])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_BODY:
                return _reply(start_response, 413, {"detail": "request too large"})
            payload = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        except (ValueError, TypeError):
            return _reply(start_response, 400, {"detail": "body must be JSON"})
        try:
            status, body = ml_backend.handle(method, path, payload, self.remember_setup, self.load_image)
        except Exception as exc:  # the service keeps serving; Label Studio shows the message
            logger.exception("%s %s failed", method, path)
            status, body = 500, {"detail": f"{type(exc).__name__}: {exc}"}
        return _reply(start_response, status, body)


def _reply(start_response, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
              500: "Internal Server Error", 501: "Not Implemented"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))), *(headers or [])])
    return [data]


def serve(service: Service, host: str, port: int) -> None:
    with make_server(host, port, service, server_class=ThreadingServer, handler_class=QuietHandler) as server:
        print(f"Marker OCR ML backend on http://{host}:{port} (model_version {service.predictor.version})",
              flush=True)
        server.serve_forever()
