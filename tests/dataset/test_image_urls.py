"""One rule for a task's image URL (dataset/image_urls.py), as the export over HTTP and the standalone backend use it.

The in-process reader's use of the same rule is tested with real storages in test_images.py.
"""

from __future__ import annotations

import pytest

from marker_ls_plugin.dataset.image_urls import locate_image, server_request_url, task_image_url
from marker_ls_plugin.ml.predictor import Predictor
from marker_ls_plugin.ml.standalone import Service
from marker_ls_plugin.ocr.types import ImageError


@pytest.mark.parametrize(("url", "server", "kind", "path"), [
    ("/data/upload/1/a.png", None, "server", "/data/upload/1/a.png"),
    (" /data/local-files/?d=x/a.png ", None, "server", "/data/local-files/?d=x/a.png"),
    ("http://localhost:8080/data/upload/1/a.png?x=1", None, "server", "/data/upload/1/a.png?x=1"),
    ("http://[::1]/page.png", None, "server", "/page.png"),
    ("https://ls.example.com/ls/data/upload/1/a.png", "https://ls.example.com/ls/", "server", "/data/upload/1/a.png"),
    ("s3://bucket/dir/a.png", None, "storage", ""),
    ("file:///etc/passwd", None, "storage", ""),
    ("https://example.com/a.png", "http://ls:8080", "external", ""),
    ("http://10.0.0.1/data/upload/1/x.png", None, "external", ""),
])
def test_where_an_image_url_points(url, server, kind, path):
    location = locate_image(url, server)
    assert (location.kind, location.path, location.url) == (kind, path, url.strip())


@pytest.mark.parametrize("url", ["", "  ", None, ["/data/upload/1/a.png"], "a.png", "//host/a.png"])
def test_what_is_not_an_image_url(url):
    with pytest.raises(ImageError):
        locate_image(url)


def test_the_image_url_in_task_data():
    assert task_image_url({"image": "/a.png"}, "image", 1) == "/a.png"
    assert task_image_url({"$undefined$": "s3://b/a.png"}, "image", 1) == "s3://b/a.png"  # storage sync's key
    with pytest.raises(ImageError, match="task 7 has no 'image' field in its data"):
        task_image_url({"scan": "/a.png"}, "image", 7)
    with pytest.raises(ImageError, match="task 7 has no 'image' field"):
        task_image_url(None, "image", 7)


def test_a_server_path_keeps_the_servers_prefix_once():
    assert server_request_url("http://ls:8080", "/data/upload/a.png") == "http://ls:8080/data/upload/a.png"
    assert server_request_url("http://h/ls/", "/data/upload/a.png") == "http://h/ls/data/upload/a.png"
    assert server_request_url("http://h/ls", "/ls/data/upload/a.png") == "http://h/ls/data/upload/a.png"


def service(url: str | None = "http://ls:8080", allow_external_urls: bool = False) -> Service:
    return Service(Predictor("v", "rapidocr"), url, "key", allow_external_urls=allow_external_urls)


def task(url) -> dict:
    return {"id": 3, "data": {"image": url}}


def test_the_standalone_backend_reads_label_studios_own_files_from_label_studio():
    own = service()
    assert own.image_url(task("/data/upload/1/a.png"), "image") == "http://ls:8080/data/upload/1/a.png"
    assert own.image_url(task("http://ls:8080/data/upload/1/a.png"), "image") == "http://ls:8080/data/upload/1/a.png"
    # Label Studio's default HOSTNAME in a task: the file is read from the Label Studio the service was given.
    assert own.image_url(task("http://localhost:8080/data/upload/1/a.png"), "image") == \
        "http://ls:8080/data/upload/1/a.png"
    assert service("http://h/ls").image_url(task("/ls/data/upload/a.png"), "image") == "http://h/ls/data/upload/a.png"
    with pytest.raises(ImageError, match="start the backend with --label-studio-url"):
        service(None).image_url(task("/data/upload/1/a.png"), "image")
    with pytest.raises(ImageError, match="task 3 has no 'image' field in its data"):
        own.image_url({"id": 3, "data": {}}, "image")


def test_the_standalone_backend_fetches_other_hosts_only_when_told_and_never_private_ones():
    for url in ("https://example.com/a.png", "s3://bucket/a.png"):
        with pytest.raises(ImageError, match="only Label Studio's own files"):
            service().image_url(task(url), "image")
    with pytest.raises(ImageError, match="only Label Studio's own files"):
        service(allow_external_urls=True).image_url(task("s3://bucket/a.png"), "image")
    with pytest.raises(ImageError, match="private, loopback or link-local"):
        service(allow_external_urls=True).image_url(task("http://10.0.0.1/a.png"), "image")
