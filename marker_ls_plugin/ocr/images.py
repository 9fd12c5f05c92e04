"""A task's image read in-process: from uploads, local files or a project's cloud storage, then decoded safely."""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import struct
import warnings
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import ExifTags, Image, ImageOps

from marker_ls_plugin.ocr.memory import return_freed_memory
from marker_ls_plugin.ocr.types import ImageError

# Formats a browser shows in Label Studio's image tag. Others (EPS runs Ghostscript) are never opened.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def load_task_image(task: Any, image_key: str, *, max_pixels: int) -> Image.Image:
    """The upright RGB image named by ``task.data[image_key]``."""
    return open_image(read_task_image_bytes(task, task_image_url(task, image_key)), max_pixels=max_pixels)


def load_task_page(task: Any, image_key: str, *, max_pixels: int,
                   max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The task's image as ``open_page`` gives it: shrunk to ``max_side``, and its full upright size."""
    return open_page(read_task_image_bytes(task, task_image_url(task, image_key)), max_pixels=max_pixels,
                     max_side=max_side)


def task_image_url(task: Any, image_key: str) -> str:
    """The URL in ``task.data[image_key]``.

    Storage sync with a single-input config stores the URL under Label Studio's placeholder key
    (``settings.DATA_UNDEFINED_NAME``, "$undefined$"); its API shows it under the config's key.
    """
    from django.conf import settings

    data = task.data or {}
    url = data.get(image_key) or data.get(getattr(settings, "DATA_UNDEFINED_NAME", "$undefined$"))
    if not url:
        raise ImageError(f"task {task.pk} has no '{image_key}' field in its data")
    return url


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode ``data`` into a loaded RGB image with its EXIF orientation applied.

    The size is read from the header and checked against ``max_pixels`` before any pixel is decoded.
    Pillow's own process-wide limit (``PIL.Image.MAX_IMAGE_PIXELS``) is not what decides here.
    """
    return open_page(data, max_pixels=max_pixels, max_side=None)[0]


def open_page(data: bytes, *, max_pixels: int, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Like ``open_image``, shrunk so that its longer side is at most ``max_side``; and its full upright size.

    The full-size pixels are held only while decoding: a JPEG decodes at a fraction of its size (Pillow's
    ``draft``), other formats are shrunk right after decoding and the full image dropped.
    """
    image = _identify(data)
    width, height, kind = image.width, image.height, image.format
    if width * height > max_pixels:
        raise ImageError(_too_large(width, height, max_pixels))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if max_side and kind == "JPEG":
                image.draft(image.mode, _fit(width, height, max_side))  # decodes at 1/2, 1/4 or 1/8 when it can
            image.load()
            turned = image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS
            small = shrink(image, max_side)
            if small is not image:
                del image  # the full-size pixels go now, before the next copy
                return_freed_memory()
            upright = ImageOps.exif_transpose(small) or small
    except Image.DecompressionBombError as exc:  # a GIF frame larger than its header said
        raise ImageError(f"image frames are larger than {width}x{height}: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt or truncated image ({kind}: {exc})") from exc
    return _to_rgb(upright), ((height, width) if turned else (width, height))


def shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    """``image`` scaled down so that its longer side is ``max_side`` (aspect kept); a smaller one as it is."""
    if not max_side or max(image.size) <= max_side:
        return image
    if image.mode == "1":  # Pillow resizes 1-bit and palette images by nearest neighbour: strokes would break
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = _to_rgb(image)
    # reducing_gap: a cheap integer box reduction first, then Lanczos over the last factor of at most 3.
    return image.resize(_fit(image.width, image.height, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _identify(data: bytes) -> Image.Image:
    """Open the header with the format's own reader: what Image.open does, minus Pillow's global size check."""
    if not data:
        raise ImageError("not an image: the file is empty")
    Image.init()
    prefix = data[:16]
    for name in FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))
        accepted = accept(prefix) if accept is not None else True
        if factory is None or isinstance(accepted, str) or not accepted:  # a str is Pillow's "maybe" warning
            continue
        try:
            return factory(io.BytesIO(data), "")
        except Image.DecompressionBombError as exc:
            raise ImageError(f"image is too large: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise ImageError(f"corrupt or truncated image ({name}: {exc})") from exc
    raise ImageError(f"not an image (expected one of {', '.join(FORMATS)})")


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (f"image is {width}x{height} = {_mpx(width * height)} Mpx, above the {_mpx(max_pixels)} Mpx limit "
            "(MARKER_LS['MAX_IMAGE_PIXELS'])")


def _mpx(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are usually black underneath; text drawn on them would vanish on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def read_task_image_bytes(task: Any, url: str) -> bytes:
    """The bytes behind a task data URL, read in-process without HTTP.

    Uploads (``/data/upload/...``) come through Django's default storage, local files
    (``/data/local-files/?d=...``) from LOCAL_FILES_DOCUMENT_ROOT, and ``s3://``/``gs://``/``azure-blob://``
    URIs from the project's import storage that claims them. Other http(s) URLs are refused: fetching
    addresses written in task data from the server would let anyone who imports tasks probe its network.
    """
    if not isinstance(url, str) or not url.strip():
        raise ImageError(f"the task's image is not a URL: {url!r}")
    url = url.strip()
    path, query = _local_path(url)
    if path is not None:
        from django.conf import settings

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


def _local_path(url: str) -> tuple[str | None, str]:
    """The path (FORCE_SCRIPT_NAME removed) and query of a URL served by this server, else (None, '')."""
    from django.conf import settings

    hostname = (getattr(settings, "HOSTNAME", "") or "").rstrip("/")
    if hostname and url.startswith(hostname + "/"):
        url = url[len(hostname):]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("http", "https") or parts.hostname not in _LOOPBACK:
            return None, ""
    path = parts.path
    script_name = (getattr(settings, "FORCE_SCRIPT_NAME", "") or "").rstrip("/")
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    return path, parts.query


def _read_upload(name: str, upload_dir: str) -> bytes:
    from django.core.exceptions import SuspiciousFileOperation
    from django.core.files.storage import default_storage

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
    from django.conf import settings
    from django.core.exceptions import SuspiciousFileOperation
    from django.utils._os import safe_join

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
    from io_storages.localfiles.models import LocalFilesImportStorage

    directory = os.path.normpath(directory)
    storages = LocalFilesImportStorage.objects.filter(project__organization_id=task.project.organization_id)
    for path in storages.values_list("path", flat=True):
        root = os.path.normpath(path or "").rstrip(os.sep)
        if root and (directory == root or directory.startswith(root + os.sep)):
            return True
    return False


def _storage_for(task: Any, url: str) -> Any:
    from io_storages.functions import get_storage_by_url

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
