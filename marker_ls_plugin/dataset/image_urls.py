"""A task's image URL: the one rule for where it is and what it points to.

Used in-process (``dataset/storage.py``: pre-annotation, the in-process ML backend, the export from the
database), by the export over Label Studio's API (``dataset/remote.py``) and by the standalone ML backend
(``ml/standalone.py``). No Django: the standalone service has no settings and no database.

What each caller does with a location differs by what it can reach: in-process reads Label Studio's own files
from its storages and cloud URIs through the project's storage; over HTTP, own files are requested from Label
Studio with its API key and cloud URIs through the task's presign endpoint (the export). External hosts are
never fetched, except by the standalone service when told to (``--allow-external-urls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from marker_ls_plugin.ocr.labeling import data_image_url
from marker_ls_plugin.ocr.types import ImageError

# Hosts that mean "the server itself": Label Studio writes its HOSTNAME (http://localhost:8080 unless set) into
# the URLs of uploads, so such a URL names the server's own file wherever the server is reached from.
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def task_image_url(data: dict[str, Any] | None, image_key: str, task_id: Any) -> Any:
    """The image URL in a task's ``data`` under the label config's ``image_key`` (``ocr.labeling.data_image_url``:
    storage sync may store it under Label Studio's placeholder key); ImageError when there is none."""
    url = data_image_url(data or {}, image_key)
    if not url:
        raise ImageError(f"task {task_id} has no '{image_key}' field in its data")
    return url


@dataclass(frozen=True)
class ImageLocation:
    """Where a task's image URL points.

    ``kind``: "server", a file Label Studio serves itself (an upload, a local file), ``path`` being its path
    and query on the server; "storage", a cloud storage URI (``s3://``, ``gs://``, ``azure-blob://``...);
    "external", an http(s) URL on another host. ``url``: the URL as stored, stripped.
    """

    kind: Literal["server", "storage", "external"]
    url: str
    path: str = ""


def locate_image(url: Any, server_url: str | None = None) -> ImageLocation:
    """Where ``url``, a task's image URL as stored, points; ImageError when it is not an image URL.

    The server's own files are paths (``/data/upload/...``, ``/data/local-files/?d=...``), URLs under
    ``server_url`` (the server's own address: its HOSTNAME in-process, the URL it was reached at over HTTP;
    the path is then what follows it) and http(s) URLs on a loopback host.
    """
    if not isinstance(url, str) or not url.strip():
        raise ImageError(f"the task's image is not a URL: {url!r}")
    url = url.strip()
    own = (server_url or "").rstrip("/")
    if own and url.startswith(own + "/"):
        return ImageLocation("server", url, url[len(own):])
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc and url.startswith("/"):
        return ImageLocation("server", url, url)
    if parts.scheme in ("http", "https"):
        if parts.hostname in LOOPBACK:
            return ImageLocation("server", url, parts.path + (f"?{parts.query}" if parts.query else ""))
        return ImageLocation("external", url)
    if parts.scheme and "://" in url:
        return ImageLocation("storage", url)
    raise ImageError(f"cannot read the image at {url!r}: not an upload, local file or cloud storage URI")


def server_request_url(server_url: str, path: str) -> str:
    """The address of a "server" image's ``path`` on the server at ``server_url``.

    A path that already starts with ``server_url``'s path prefix (Label Studio behind ``/ls/`` writes
    ``/ls/data/upload/...``) keeps it once.
    """
    base = urlsplit(server_url)
    origin = f"{base.scheme}://{base.netloc}"
    prefix = base.path.rstrip("/")
    return (origin if prefix and path.startswith(prefix + "/") else origin + prefix) + path
