"""Image bytes decoded safely: size limits checked before decoding, EXIF orientation applied, pages shrunk.

Where the bytes come from (uploads, local files, cloud storage, Label Studio over HTTP) is the callers' part:
``dataset/storage.py`` in-process, ``dataset/remote.py`` and the standalone backend over HTTP.
"""

from __future__ import annotations

import io
import struct
import warnings

from PIL import ExifTags, Image, ImageOps

from marker_ls_plugin.ocr.memory import return_freed_memory
from marker_ls_plugin.ocr.pixels import fit, flatten_rgb, shrink
from marker_ls_plugin.ocr.types import ImageError

# Formats a browser shows in Label Studio's image tag. Others (EPS runs Ghostscript) are never opened.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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
                image.draft(image.mode, fit(width, height, max_side))  # decodes at 1/2, 1/4 or 1/8 when it can
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
    return flatten_rgb(upright), ((height, width) if turned else (width, height))


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
