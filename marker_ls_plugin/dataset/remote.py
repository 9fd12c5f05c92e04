"""Annotated tasks read from a running Label Studio over its API (label-studio-sdk); no Django needed.

Tasks come page by page with their annotations and their data as stored (``resolve_uri=false``), so that
``source_image`` reads the same as in-process. Images are downloaded from Label Studio with the API key:
uploads and local files by their own URL, cloud storage URIs through ``/tasks/<id>/presign/?fileuri=``.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

import httpx

from marker_ls_plugin import __version__
from marker_ls_plugin.conf import DEFAULTS
from marker_ls_plugin.dataset.image_urls import locate_image, server_request_url
from marker_ls_plugin.dataset.regions import choose_annotation
from marker_ls_plugin.dataset.sources import AnnotatedTask
from marker_ls_plugin.ocr.images import open_image
from marker_ls_plugin.ocr.labeling import controls_from_config, data_image_url
from marker_ls_plugin.ocr.types import ImageError

PAGE_SIZE = 100
TIMEOUT = 60.0
# Images downloaded concurrently, ahead of the task being cropped. Only the compressed bytes of at most
# 2 x DOWNLOADS tasks are held at a time, so memory stays flat.
DOWNLOADS = 8


class RemoteSource:
    """A project of the Label Studio at ``url``, read with ``api_key`` (legacy token or Personal Access Token)."""

    def __init__(self, url: str, api_key: str, project_id: int, *, max_pixels: int | None = None,
                 page_size: int = PAGE_SIZE, downloads: int = DOWNLOADS):
        from label_studio_sdk import LabelStudio  # deferred: heavy (hundreds of generated API modules)

        if not api_key:
            raise ValueError("exporting from a Label Studio URL needs an API key: pass api_key (--api-key) or set "
                             "LABEL_STUDIO_API_KEY")
        self.url = url.rstrip("/")
        self.max_pixels = max_pixels or DEFAULTS["MAX_IMAGE_PIXELS"]
        self.page_size = page_size
        self.downloads = max(1, downloads)
        self._http = httpx.Client(timeout=TIMEOUT, follow_redirects=True)
        self._seen = 0
        try:
            self.client = LabelStudio(base_url=self.url, api_key=api_key, httpx_client=self._http)
            found = self.client.projects.get(id=project_id)
        except Exception as exc:
            self._http.close()
            raise ValueError(_describe(exc, self.url, project_id)) from exc
        self.project = found.id
        self.label_config = found.label_config or ""

    def tasks(self, rule: str) -> Iterator[AnnotatedTask]:
        """Annotated tasks in id order; their images are already downloading when they are yielded."""
        image_key = _image_key(self.label_config)
        pool = ThreadPoolExecutor(self.downloads, thread_name_prefix="marker-ls-export")
        window: deque[tuple[AnnotatedTask, Any, Future | None]] = deque()
        try:
            for item in self._annotated(rule):
                url = data_image_url(item.data, image_key) if image_key else None
                ahead = None
                if isinstance(url, str) and url.strip() and item.result:
                    ahead = pool.submit(self._download, item.task, url, self._auth())
                window.append((item, url, ahead))
                if len(window) > 2 * self.downloads:
                    yield self._ready(*window.popleft())
            while window:
                yield self._ready(*window.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _annotated(self, rule: str) -> Iterator[AnnotatedTask]:
        self._seen = 0
        pager = self.client.tasks.list(project=self.project, fields="all", resolve_uri=False,
                                       page_size=self.page_size)
        for task in pager:
            self._seen += 1
            chosen = choose_annotation(list(task.annotations or []), rule)
            if chosen is not None:
                yield AnnotatedTask(task.id, dict(task.data or {}), chosen["id"], chosen.get("result"),
                                    partial(self._load_image, task.id))

    def _ready(self, item: AnnotatedTask, url: Any, ahead: Future | None) -> AnnotatedTask:
        """``item`` whose loader decodes the downloaded bytes (other URLs are fetched when asked)."""
        if ahead is None:
            return item

        def load(wanted: str) -> Any:
            if wanted != url:
                return self._load_image(item.task, wanted)
            return open_image(ahead.result(), max_pixels=self.max_pixels)

        return replace(item, load_image=load)

    def total_tasks(self) -> int:
        """Tasks listed by the last ``tasks()`` pass, annotated or not."""
        return self._seen

    def versions(self) -> dict[str, str | None]:
        try:
            release = self.client.versions.get().release
        except Exception:  # an older server, or a proxy that hides it: the manifest says unknown
            release = None
        return {"label_studio": release, "marker_ls_plugin": __version__}

    def close(self) -> None:
        self._http.close()

    def _load_image(self, task_id: int, url: str) -> Any:
        return open_image(self._download(task_id, url, self._auth()), max_pixels=self.max_pixels)

    def _download(self, task_id: int, url: str, auth: dict[str, str]) -> bytes:
        """The image's bytes, or ImageError; runs on the download threads (httpx's client is thread-safe)."""
        target = image_request_url(self.url, task_id, url)
        try:
            response = self._http.get(target, headers=auth)
        except httpx.HTTPError as exc:
            raise ImageError(f"cannot download {url}: {exc}") from exc
        if response.status_code == 404:
            raise ImageError(f"file not found: {url} (HTTP 404)")
        if response.status_code != 200:
            raise ImageError(f"cannot download {url}: HTTP {response.status_code}")
        return response.content

    def _auth(self) -> dict[str, str]:
        # The SDK's own header: "Token <key>" for legacy tokens, a refreshed "Bearer" access token for PATs.
        # httpx drops it when a presign URL redirects to another host (the bucket).
        return {"Authorization": self.client._client_wrapper.get_headers()["Authorization"]}


def image_request_url(base_url: str, task_id: int, url: Any) -> str:
    """The address to GET a task's image from, given the URL stored in its data (``image_urls.locate_image``).

    Label Studio's own files (paths, URLs under ``base_url`` or on a loopback host) are read from ``base_url``;
    storage URIs (``s3://``, ``gs://``, ``azure-blob://``...) through the task's presign endpoint, which proxies
    the bucket or redirects to a presigned URL. Other hosts are refused, as in-process.
    """
    location = locate_image(url, base_url)
    if location.kind == "server":
        return server_request_url(base_url, location.path)
    if location.kind == "external":
        raise ImageError(f"{location.url} is an external URL; images are only read from Label Studio. "
                         "Upload the file, or connect its bucket or folder as a source storage")
    fileuri = base64.urlsafe_b64encode(location.url.encode()).decode()
    return server_request_url(base_url, f"/tasks/{task_id}/presign/?fileuri={fileuri}")


def _image_key(label_config: str) -> str | None:
    try:
        return controls_from_config(label_config).image_key
    except ValueError:  # not an OCR config: the export says so itself
        return None


def _describe(exc: Exception, url: str, project_id: int) -> str:
    status = getattr(exc, "status_code", None)
    if status == 404:
        return f"no project with id {project_id} at {url}"
    if status in (401, 403):
        return f"Label Studio at {url} refused the API key (HTTP {status})"
    if status is not None:
        return f"Label Studio at {url} answered HTTP {status} for project {project_id}: {getattr(exc, 'body', '')}"
    return f"cannot reach Label Studio at {url}: {exc}"
