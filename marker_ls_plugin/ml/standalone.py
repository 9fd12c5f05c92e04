"""``marker-ls ml-backend``: the ML backend protocol as its own service, with no database.

Label Studio calls it like any ML backend. It reads task images over HTTP from the Label Studio it was
started for (``--label-studio-url``, with ``--api-key``), never from a host a request names. Each project
gets the model Label Studio asks for in ``/setup`` (``model_version``, or ``extra_params.model_version``
from the Model tab), else the service's default: the engine and checkpoint given on its command line, or
the newest model under ``<models dir>/recognition/`` (the guide's "place your model files there").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests

from marker_ls_plugin.dataset.image_urls import locate_image, server_request_url, task_image_url
from marker_ls_plugin.ml import protocol
from marker_ls_plugin.ml.predictor import Predictor
from marker_ls_plugin.ocr import pool
from marker_ls_plugin.ocr.base import Engine
from marker_ls_plugin.ocr.images import open_image
from marker_ls_plugin.ocr.types import ImageError
from marker_ls_plugin.training import model_dir

logger = logging.getLogger(__name__)

MAX_BODY = 50 * 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def model_dirs(models_dir: str | None) -> dict[str, Path]:
    """The recognition checkpoints under ``<models_dir>/recognition/`` (the registry's scanner, model_dir.py) by
    model name (its metadata's name, else the directory's name); hidden (in-progress) ones left out."""
    if not models_dir:
        return {}
    return {model_dir.model_name(path): path for path in model_dir.model_directories(models_dir)
            if (path / "config.json").is_file()}


def newest_model(models_dir: str | None) -> Path | None:
    """The most recently changed model directory under ``<models_dir>/recognition/``."""
    candidates = list(model_dirs(models_dir).values())
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def listen_refusal(host: str, basic_auth: str | None) -> str | None:
    """Why the service must not listen on ``host``; None when it may. Without credentials: loopback only."""
    if basic_auth or host in LOOPBACK_HOSTS:
        return None
    return (f"refusing to listen on {host} without credentials: anyone who reaches the port could use the "
            "service and its Label Studio API key. Set --basic-auth USER:PASSWORD (and the same user and "
            "password in the Model tab's Basic auth), or listen on --host 127.0.0.1")


class Service:
    """The protocol's state: the models, where Label Studio is, and how to authenticate."""

    def __init__(self, predictor: Predictor, label_studio_url: str | None, api_key: str | None,
                 basic_auth: str | None = None, max_pixels: int = 89_478_485, allow_external_urls: bool = False,
                 models_dir: str | None = None, engine_cache_size: int = 2):
        self.predictor = predictor  # the default
        self.engine_cache_size = engine_cache_size
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.max_pixels = max_pixels
        self.allow_external_urls = allow_external_urls
        self.models_dir = models_dir
        self._projects: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    # Models

    def versions(self) -> list[str]:
        return list(dict.fromkeys([self.predictor.version, *model_dirs(self.models_dir)]))

    def predictor_named(self, version: str) -> Predictor:
        if version == self.predictor.version:
            return self.predictor
        path = model_dirs(self.models_dir).get(version)
        if path is None or self.predictor.engine != "surya":
            raise protocol.BadRequest(
                f"unknown model_version {version!r}: this backend serves {', '.join(self.versions())} "
                f"(models are the directories under {self.models_dir or '--models-dir'}/recognition/)")
        options = {**self.predictor.options, "recognition_checkpoint": str(path)}
        return Predictor(version, "surya", options)

    def setup(self, payload: dict) -> Predictor:
        """``/setup``: remember the model the project asks for. Its ``hostname`` is not used: images come only
        from the Label Studio this service was started for."""
        extra = payload.get("extra_params") if isinstance(payload.get("extra_params"), dict) else {}
        wanted = payload.get("model_version") or extra.get("model_version")
        predictor = self.predictor_named(str(wanted)) if wanted else self.predictor
        with self._lock:
            self._projects[_project_key(payload)] = predictor
            if not self.api_key and isinstance(payload.get("access_token"), str):
                self.api_key = payload["access_token"] or None
        return predictor

    def predictor_for(self, payload: dict) -> Predictor:
        with self._lock:
            return self._projects.get(_project_key(payload), self.predictor)

    def load_engine(self, predictor: Predictor) -> Engine:
        """The predictor's engine from this process's engine cache (``ocr.pool``, ``engine_cache_size`` engines)."""
        return pool.get_engine(predictor.engine, cache_size=self.engine_cache_size, **predictor.options)

    # Images

    def image_url(self, task: dict, image_key: str) -> str:
        """Where to GET the task's image (``dataset.image_urls``' rule): Label Studio's own files from
        ``--label-studio-url``, public http(s) URLs only with ``--allow-external-urls``; nothing else."""
        value = task_image_url(task.get("data"), image_key, task.get("id"))
        location = locate_image(value, self.label_studio_url)
        if location.kind == "server":
            if not self.label_studio_url:
                raise ImageError("Label Studio's URL is unknown: start the backend with --label-studio-url")
            return server_request_url(self.label_studio_url, location.path)
        if location.kind == "external" and self.allow_external_urls:
            if not _public_host(urlsplit(location.url).hostname or ""):
                raise ImageError(f"not fetching {value!r}: it names a private, loopback or link-local address")
            return location.url
        own = self.label_studio_url or "set --label-studio-url"
        raise ImageError(f"not fetching {value!r}: only Label Studio's own files ({own}), "
                         "or public http(s) URLs with --allow-external-urls")

    def load_image(self, task: dict, image_key: str):
        url = self.image_url(task, image_key)
        own = bool(self.label_studio_url) and url.startswith(self.label_studio_url + "/")
        headers = {"Authorization": f"Token {self.api_key}"} if own and self.api_key else {}
        try:
            # Redirects are not followed: they could lead the key, or the request, elsewhere.
            response = requests.get(url, headers=headers, timeout=30, allow_redirects=False)
        except requests.RequestException as exc:
            raise ImageError(f"cannot download {url}: {exc}") from exc
        if response.status_code != 200:
            raise ImageError(f"cannot download {url}: HTTP {response.status_code}")
        return open_image(response.content, max_pixels=self.max_pixels)

    # WSGI

    def authorized(self, environ: dict) -> bool:
        if not self.basic_auth:
            return True
        return protocol.basic_auth_matches(environ.get("HTTP_AUTHORIZATION"), self.basic_auth)

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
        if path.rstrip("/").endswith("/versions") and method == "GET":
            return _reply(start_response, 200, {"versions": self.versions()})
        route = path.rstrip("/").rsplit("/", 1)[-1]
        predictor_for = self.setup if route == "setup" else self.predictor_for
        try:
            status, body = protocol.handle(method, path, payload, predictor_for, self.load_image, self.load_engine)
        except Exception as exc:  # the service keeps serving; Label Studio shows the message
            logger.exception("%s %s failed", method, path)
            status, body = 500, {"detail": f"{type(exc).__name__}: {exc}"}
        return _reply(start_response, status, body)


def _project_key(payload: dict) -> str:
    # Label Studio names its project "<id>.<created timestamp>".
    return str(payload.get("project") or "")


def _public_host(host: str) -> bool:
    """Whether every address ``host`` resolves to is a public one (no loopback, private, link-local: metadata)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    return bool(addresses) and all(address.is_global for address in addresses)


def _reply(start_response, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
              500: "Internal Server Error", 501: "Not Implemented"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))), *(headers or [])])
    return [data]


def serve(service: Service, host: str, port: int) -> None:
    refusal = listen_refusal(host, service.basic_auth)
    if refusal:
        raise ValueError(refusal)
    with make_server(host, port, service, server_class=ThreadingServer, handler_class=QuietHandler) as server:
        print(f"Marker OCR ML backend on http://{host}:{port} (model_version {service.predictor.version})",
              flush=True)
        server.serve_forever()
