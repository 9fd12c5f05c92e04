"""Giving memory back to the system after a large image or a model is freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["return_freed_memory"]


def return_freed_memory() -> None:
    """Release the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc serves a large block from its heap instead of a mapping of its own once a block of that size has
    been freed (its mmap threshold rises to it), and keeps freed heap pages: after one decoded 9400x9400 page
    (337 MB) the process would stay that much larger until it exits.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
