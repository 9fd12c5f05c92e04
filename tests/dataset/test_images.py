"""Task images read in-process (uploads, local files, cloud storage) and decoded with size and format checks."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from mls_factories import make_project
from PIL import Image

from marker_ls_plugin.dataset.storage import load_task_image, read_task_image_bytes
from marker_ls_plugin.ocr.images import open_image, open_page
from marker_ls_plugin.ocr.types import ImageError

LIMIT = 178_956_970  # Pillow's own hard limit, 2 * PIL.Image.MAX_IMAGE_PIXELS


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` and which holds no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def noise(width: int = 200, height: int = 120) -> Image.Image:
    return Image.frombytes("RGB", (width, height), bytes(range(256)) * (width * height * 3 // 256 + 1))


# --- decoding ---------------------------------------------------------------------------------------


def test_png_and_jpeg_decode_to_loaded_rgb():
    for fmt in ("PNG", "JPEG"):
        image = open_image(encode(noise(), fmt), max_pixels=LIMIT)
        assert (image.mode, image.size) == ("RGB", (200, 120))
        assert image.getpixel((0, 0)) is not None  # loaded: no file left behind to read from


def test_transparent_png_gets_a_white_background():
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    image.putpixel((5, 5), (0, 0, 0, 255))
    decoded = open_image(encode(image), max_pixels=LIMIT)
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((5, 5)) == (0, 0, 0)


def test_exif_orientation_6_becomes_upright_with_swapped_size():
    # Stored 80 wide x 40 high with a red block at the stored top-left; orientation 6 = turn 90° clockwise.
    stored = Image.new("RGB", (80, 40), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = open_image(encode(stored, "JPEG", exif=exif, quality=95), max_pixels=LIMIT)
    assert upright.size == (40, 80)
    red, green, blue = upright.getpixel((30, 10))  # the block is now at the top-right
    assert red > 200 and green < 60 and blue < 60
    assert upright.getpixel((10, 70))[1] > 200  # the bottom-left stays white


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not an image"),
    (b"Dear reader,\nthis is a text file.\n", "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS would run Ghostscript
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "corrupt or truncated image"),
    (b"\xff\xd8\xff\xe0" + b"garbage" * 20, "corrupt or truncated image"),
])
def test_unusable_bytes_say_what_is_wrong(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt):
    data = encode(noise(), fmt)
    with pytest.raises(ImageError, match="corrupt or truncated image"):
        open_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_a_huge_header_is_refused_before_decoding():
    with pytest.raises(ImageError) as raised:
        open_image(png_header_only(40_000, 40_000), max_pixels=LIMIT)
    assert str(raised.value) == ("image is 40000x40000 = 1600 Mpx, above the 179 Mpx limit "
                                 "(MARKER_LS['MAX_IMAGE_PIXELS'])")


def test_a_compressed_bomb_is_refused_by_its_header():
    bomb = encode(Image.new("1", (12_000, 10_000)), optimize=True)  # 120 Mpx of black in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match=r"12000x10000 = 120 Mpx, above the 50 Mpx limit"):
        open_image(bomb, max_pixels=50_000_000)


def test_the_plugin_limit_decides_not_pillows_global_one(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # would make Image.open refuse anything over 200 px
    assert open_image(encode(noise(50, 40)), max_pixels=10_000).size == (50, 40)
    with pytest.raises(ImageError, match="above the 0.001 Mpx limit"):
        open_image(encode(noise(50, 40)), max_pixels=1_000)


# --- reading task URLs ------------------------------------------------------------------------------


@pytest.fixture
def task():
    from tasks.models import Task

    return Task.objects.create(project=make_project("images"), data={})


@pytest.fixture
def upload(task):
    """A PNG written where Label Studio keeps uploads; yields its /data/upload/... URL and bytes."""
    folder = Path(settings.MEDIA_ROOT, settings.UPLOAD_DIR, str(task.project_id))
    folder.mkdir(parents=True, exist_ok=True)
    data = encode(noise())
    (folder / "a1b2c3-scan page.png").write_bytes(data)
    yield f"/data/upload/{task.project_id}/a1b2c3-scan%20page.png", data
    shutil.rmtree(folder)


def test_uploads_are_read_through_default_storage(task, upload):
    url, data = upload
    assert read_task_image_bytes(task, url) == data
    with override_settings(HOSTNAME="https://ls.example.com"):
        assert read_task_image_bytes(task, "https://ls.example.com" + url) == data
    assert read_task_image_bytes(task, "http://localhost:8080" + url) == data
    with override_settings(FORCE_SCRIPT_NAME="/label-studio"):
        assert read_task_image_bytes(task, "/label-studio" + url) == data


def test_missing_and_escaping_uploads_are_refused(task, upload):
    with pytest.raises(ImageError, match=r"file not found: upload/\d+/nope.png"):
        read_task_image_bytes(task, f"/data/upload/{task.project_id}/nope.png")
    with pytest.raises(ImageError, match="leaves the upload folder"):
        read_task_image_bytes(task, "/data/upload/../export/project.json")


def test_load_task_image_combines_lookup_and_decoding(task, upload):
    url, _ = upload
    task.data = {"image": url}
    assert load_task_image(task, "image", max_pixels=LIMIT).size == (200, 120)
    with pytest.raises(ImageError, match="has no 'scan' field"):
        load_task_image(task, "scan", max_pixels=LIMIT)


@pytest.fixture
def local_root(tmp_path, task):
    from io_storages.localfiles.models import LocalFilesImportStorage

    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "page 1.png").write_bytes(encode(noise()))
    (tmp_path / "secret.png").write_bytes(encode(noise()))
    LocalFilesImportStorage.objects.create(project=task.project, path=str(tmp_path / "scans"))
    with override_settings(LOCAL_FILES_DOCUMENT_ROOT=str(tmp_path), LOCAL_FILES_SERVING_ENABLED=True):
        yield tmp_path


def test_local_files_are_read_from_the_document_root(task, local_root):
    data = (local_root / "scans" / "page 1.png").read_bytes()
    assert read_task_image_bytes(task, "/data/local-files/?d=scans/page%201.png") == data
    assert read_task_image_bytes(task, "/data/local-files/?d=/scans/./page 1.png") == data


@pytest.mark.parametrize(("d", "message"), [
    ("../etc/passwd", "outside LOCAL_FILES_DOCUMENT_ROOT"),
    ("scans/../../../etc/passwd", "outside LOCAL_FILES_DOCUMENT_ROOT"),
    ("secret.png", "no local files storage"),  # inside the root, outside every storage folder
    ("scans/missing.png", "file not found: scans/missing.png"),
    ("", "no \\?d= path"),
])
def test_local_files_outside_storages_are_refused(task, local_root, d, message):
    with pytest.raises(ImageError, match=message):
        read_task_image_bytes(task, f"/data/local-files/?d={d}")


def test_local_files_need_serving_enabled(task, local_root):
    with override_settings(LOCAL_FILES_SERVING_ENABLED=False), pytest.raises(ImageError, match="LOCAL_FILES_SERVING"):
        read_task_image_bytes(task, "/data/local-files/?d=scans/page%201.png")


def test_cloud_uris_are_read_through_the_project_storage(task, monkeypatch):
    from botocore.response import StreamingBody
    from io_storages.s3.models import S3ImportStorage
    from tasks.models import Task

    data = encode(noise())
    S3ImportStorage.objects.create(project=task.project, bucket="scans")
    asked = []

    def get_bytes_stream(self, uri, range_header=None):
        asked.append((self.bucket, uri, range_header))
        if uri.endswith("missing.png"):
            return None, None, {}  # what the storages return after logging a failure
        return StreamingBody(io.BytesIO(data), len(data)), "image/png", {}

    monkeypatch.setattr(S3ImportStorage, "get_bytes_stream", get_bytes_stream)
    task = Task.objects.get(pk=task.pk)  # a fresh project: its storage list is cached per instance
    assert read_task_image_bytes(task, "s3://scans/p/1.png") == data
    assert asked == [("scans", "s3://scans/p/1.png", None)]
    with pytest.raises(ImageError, match="could not read s3://scans/missing.png from S3ImportStorage"):
        read_task_image_bytes(task, "s3://scans/missing.png")
    with pytest.raises(ImageError, match="no cloud storage of this project can read gs://other/1.png"):
        read_task_image_bytes(task, "gs://other/1.png")


@pytest.mark.parametrize("url", ["https://example.com/page.png", "http://10.0.0.1/data/upload/1/x.png"])
def test_external_urls_are_not_fetched(task, url):
    with pytest.raises(ImageError, match="external URL; images are not downloaded"):
        read_task_image_bytes(task, url)


@pytest.mark.parametrize("url", ["", None, ["/data/upload/1/a.png"], "ftp://host/a.png"])
def test_other_values_are_refused(task, url):
    with pytest.raises(ImageError):
        read_task_image_bytes(task, url)


# --- pages shrunk to what an engine reads ------------------------------------------------------------


def test_open_page_shrinks_to_the_longer_side_and_gives_the_full_upright_size():
    stored = Image.new("RGB", (3000, 1200), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 600, 600))
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90° clockwise: upright it is 1200 wide, 3000 high
    for fmt, params in (("PNG", {}), ("JPEG", {"exif": exif, "quality": 95})):
        page, size = open_page(encode(stored, fmt, **params), max_pixels=LIMIT, max_side=1000)
        turned = fmt == "JPEG"
        assert size == ((1200, 3000) if turned else (3000, 1200))
        assert page.mode == "RGB" and page.size == ((400, 1000) if turned else (1000, 400))
        red = page.getpixel((370, 30) if turned else (30, 30))
        assert red[0] > 200 and red[1] < 60, (fmt, red)
    small, size = open_page(encode(noise(50, 40)), max_pixels=LIMIT, max_side=1000)
    assert small.size == size == (50, 40)


def test_shrinking_keeps_thin_strokes_and_transparency_white():
    line = Image.new("1", (2000, 400), 1)
    line.paste(0, (0, 200, 2000, 202))  # a 2-pixel black rule
    shrunk = open_page(encode(line), max_pixels=LIMIT, max_side=500)[0]
    assert min(shrunk.getpixel((250, y))[0] for y in range(45, 56)) < 200  # averaged, not dropped

    clear = Image.new("RGBA", (2000, 400), (0, 0, 0, 0))
    clear.paste((0, 0, 0, 255), (0, 200, 2000, 240))
    shrunk = open_page(encode(clear), max_pixels=LIMIT, max_side=500)[0]
    assert shrunk.getpixel((250, 10)) == (255, 255, 255) and shrunk.getpixel((250, 55))[0] < 60


def test_a_huge_jpeg_is_decoded_at_a_fraction_of_its_size():
    big = encode(Image.new("RGB", (8000, 6000), (250, 250, 250)), "JPEG", quality=80)
    page, size = open_page(big, max_pixels=LIMIT, max_side=1000)
    assert size == (8000, 6000) and page.size == (1000, 750)
