"""Scaling pages down and flattening them to RGB, with PIL imported only when called.

Shared by the decoder (``images.py``) and every engine (``base.py``); importing the engines imports no image
library, so PIL is imported inside these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marker_ls_plugin.ocr.types import ImageError

if TYPE_CHECKING:
    from PIL import Image


def shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    """``image`` scaled down so that its longer side is ``max_side`` (aspect kept); a smaller one as it is."""
    if not max_side or max(image.size) <= max_side:
        return image
    from PIL import Image  # deferred: importing the engines (which shrink pages) imports no image library

    if image.mode == "1":  # Pillow resizes 1-bit and palette images by nearest neighbour: strokes would break
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = flatten_rgb(image)
    # reducing_gap: a cheap integer box reduction first, then Lanczos over the last factor of at most 3.
    return image.resize(fit(image.width, image.height, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image scaled down so that its longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def flatten_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB (itself when it is); transparency flattened onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are usually black underneath; text drawn on them would vanish on black.
        from PIL import Image  # deferred: importing the engines imports no image library

        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of an image an engine is given; transparency is flattened onto white (a plain convert would turn
    it black). Unlike ``flatten_rgb`` it checks the argument, and always copies."""
    from PIL import Image  # deferred: importing the engines imports no image library

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ImageError(f"the image is empty ({image.width}x{image.height})")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")
