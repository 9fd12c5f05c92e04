"""A task's image read in-process, without HTTP: from uploads, local files or the project's cloud storage.

Where a URL points is the one rule of ``image_urls.py``; the bytes are decoded by ``ocr.images``. Label Studio's
storage models are imported when a storage is looked up: the API export imports this module (through
``sources.py``) without Django's apps.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.utils._os import safe_join
from PIL import Image

from marker_ls_plugin.dataset.image_urls import locate_image, task_image_url
from marker_ls_plugin.ocr.images import open_image, open_page
from marker_ls_plugin.ocr.types import ImageError

_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


def load_task_image(task: Any, image_key: str, *, max_pixels: int) -> Image.Image:
    """The upright RGB image named by the task's data under ``image_key`` (``image_urls.task_image_url``)."""
    url = task_image_url(task.data, image_key, task.pk)
    return open_image(read_task_image_bytes(task, url), max_pixels=max_pixels)


def load_task_page(task: Any, image_key: str, *, max_pixels: int,
                   max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The task's image as ``open_page`` gives it: shrunk to ``max_side``, and its full upright size."""
    url = task_image_url(task.data, image_key, task.pk)
    return open_page(read_task_image_bytes(task, url), max_pixels=max_pixels, max_side=max_side)


def read_task_image_bytes(task: Any, url: str) -> bytes:
    """The bytes behind a task data URL, read in-process without HTTP.

    Uploads (``/data/upload/...``) come through Django's default storage, local files
    (``/data/local-files/?d=...``) from LOCAL_FILES_DOCUMENT_ROOT, and ``s3://``/``gs://``/``azure-blob://``
    URIs from the project's import storage that claims them. Other http(s) URLs are refused: fetching
    addresses written in task data from the server would let anyone who imports tasks probe its network.
    """
    location = locate_image(url, getattr(settings, "HOSTNAME", "") or None)
    url = location.url
    if location.kind == "server":
        path, query = _server_path(location.path)
        media = settings.MEDIA_URL.rstrip("/") + "/"
        upload_dir = settings.UPLOAD_DIR.strip("/")
        if path.startswith(f"{media}{upload_dir}/"):
            return _read_upload(unquote(path[len(media):]), upload_dir)
        if path.rstrip("/") == f"{media}local-files":
            return _read_local_file(task, parse_qs(query).get("d", [""])[0])
    storage = _storage_for(task, url)
    if storage is not None:
        return _read_from_storage(storage, url)
    scheme = urlsplit(url).scheme.lower()
    if scheme in _CLOUD_SCHEMES:
        raise ImageError(f"no cloud storage of this project can read {url}; connect its bucket as a source storage")
    if scheme in ("http", "https"):
        raise ImageError(f"{url} is an external URL; images are not downloaded from the server. "
                         "Upload the file, or connect its bucket or folder as a source storage")
    raise ImageError(f"cannot read the image at {url!r}: not an upload, local file or cloud storage URI")


def _server_path(path: str) -> tuple[str, str]:
    """The path (FORCE_SCRIPT_NAME removed) and query of a file this server serves."""
    parts = urlsplit(path)
    path = parts.path
    script_name = (getattr(settings, "FORCE_SCRIPT_NAME", "") or "").rstrip("/")
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    return path, parts.query


def _read_upload(name: str, upload_dir: str) -> bytes:
    if not posixpath.normpath(name).startswith(upload_dir + "/"):
        raise ImageError(f"refused upload path {name!r}: it leaves the upload folder")
    try:
        if not default_storage.exists(name):
            raise ImageError(f"file not found: {name}")
        with default_storage.open(name, "rb") as handle:
            return handle.read()
    except SuspiciousFileOperation as exc:
        raise ImageError(f"refused upload path {name!r}: it leaves the upload folder") from exc
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ImageError(f"file not found: {name}") from exc


def _read_local_file(task: Any, relative: str) -> bytes:
    """A file under LOCAL_FILES_DOCUMENT_ROOT, with the checks Label Studio's own local-files view makes."""
    if not getattr(settings, "LOCAL_FILES_SERVING_ENABLED", False):
        raise ImageError("local files are not served: set LOCAL_FILES_SERVING_ENABLED=true and "
                         "LOCAL_FILES_DOCUMENT_ROOT to read /data/local-files/ images")
    if not relative:
        raise ImageError("the local-files URL has no ?d= path")
    try:
        full_path = safe_join(settings.LOCAL_FILES_DOCUMENT_ROOT, posixpath.normpath(relative).lstrip("/"))
    except SuspiciousFileOperation as exc:
        raise ImageError(f"refused local file {relative!r}: it is outside LOCAL_FILES_DOCUMENT_ROOT") from exc
    if not _in_local_storage(task, os.path.dirname(full_path)):
        raise ImageError(f"refused local file {relative!r}: no local files storage of this organization "
                         "contains it")
    try:
        with open(full_path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ImageError(f"file not found: {relative}") from exc


def _in_local_storage(task: Any, directory: str) -> bool:
    """Whether a local files storage of the task's organization holds ``directory`` (as Label Studio requires)."""
    from io_storages.localfiles.models import LocalFilesImportStorage  # deferred: needs Django's apps

    directory = os.path.normpath(directory)
    storages = LocalFilesImportStorage.objects.filter(project__organization_id=task.project.organization_id)
    for path in storages.values_list("path", flat=True):
        root = os.path.normpath(path or "").rstrip(os.sep)
        if root and (directory == root or directory.startswith(root + os.sep)):
            return True
    return False


def _storage_for(task: Any, url: str) -> Any:
    from io_storages.functions import get_storage_by_url  # deferred: imports storage models (Django's apps)

    return get_storage_by_url(url, task.project.get_all_import_storage_objects)


def _read_from_storage(storage: Any, url: str) -> bytes:
    try:
        found = storage.get_bytes_stream(url)  # (stream, content type[, metadata]); stream None on failure
    except Exception as exc:  # each cloud SDK raises its own errors
        raise ImageError(f"could not read {url} from {storage.__class__.__name__}: {exc}") from exc
    stream = found[0] if isinstance(found, tuple) else found
    if stream is None:  # the storages log the cause and return None
        raise ImageError(f"could not read {url} from {storage.__class__.__name__} (file missing or no access); "
                         "see the server log")
    try:
        if hasattr(stream, "iter_chunks"):
            return b"".join(stream.iter_chunks(chunk_size=1024 * 1024))
        return stream.read()
    except Exception as exc:
        raise ImageError(f"reading {url} from {storage.__class__.__name__} failed: {exc}") from exc
    finally:
        # GCS's patched close() calls itself; a failed close must not hide the bytes already read.
        with contextlib.suppress(Exception):
            stream.close()
