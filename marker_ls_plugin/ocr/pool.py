"""The process-wide engine cache: each engine built and loaded once per process, a few at a time."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from marker_ls_plugin.ocr.base import Engine
from marker_ls_plugin.ocr.rapidocr import RapidOCREngine
from marker_ls_plugin.ocr.surya import SuryaEngine

__all__ = ["DEFAULT_CACHE_SIZE", "ENGINES", "clear_engines", "drop_engine", "engine_key", "get_engine",
           "loaded_engines"]

DEFAULT_CACHE_SIZE = 2  # engines kept loaded (the plugin's ENGINE_CACHE_SIZE default)
ENGINES: dict[str, Callable[..., Engine]] = {"surya": SuryaEngine, "rapidocr": RapidOCREngine}

_engines: OrderedDict[tuple, Engine] = OrderedDict()  # least recently used first
_key_locks: dict[tuple, threading.Lock] = {}
_cache_lock = threading.Lock()


def engine_key(name: str, **options: Any) -> tuple:
    """What identifies a loaded engine: its name and the options that are set."""
    options = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items() if v is not None}
    return name, tuple(sorted(options.items()))


def get_engine(name: str, *, cache_size: int = DEFAULT_CACHE_SIZE, **options: Any) -> Engine:
    """The loaded engine for ``name`` and ``options``, built and loaded once per process (thread-safe).

    Options that are None are left out, so ``get_engine("surya")`` and ``get_engine("surya", device=None)`` share
    one engine. A failed load (EngineUnavailable) is not cached: the next call tries again. At most
    ``cache_size`` engines stay loaded; loading one more frees the least recently used.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    key = engine_key(name, **options)
    with _cache_lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one loader per key; other keys load in parallel
        with _cache_lock:
            engine = _engines.get(key)
        if engine is None:
            engine = ENGINES[name](**dict(key[1]))
            engine.load()
            with _cache_lock:
                _engines[key] = engine
                evicted = _evict(cache_size)
            for old in evicted:
                old.release()
    return engine


def _evict(size: int) -> list[Engine]:
    """Take the least recently used engines out of the cache until ``size`` are left (caller holds the lock)."""
    evicted = []
    while len(_engines) > size:
        key, engine = _engines.popitem(last=False)
        _key_locks.pop(key, None)
        evicted.append(engine)
    return evicted


def drop_engine(name: str, **options: Any) -> bool:
    """Free the engine for ``name`` and ``options`` if this process holds it (e.g. a model no longer active)."""
    key = engine_key(name, **options)
    with _cache_lock:
        engine = _engines.pop(key, None)
        if engine is None:
            return False
        _key_locks.pop(key, None)
    engine.release()
    return True


def loaded_engines() -> list[Engine]:
    """The engines this process holds, least recently used first."""
    with _cache_lock:
        return list(_engines.values())


def clear_engines() -> None:
    """Free every cached engine (tests; a process giving its memory back)."""
    with _cache_lock:
        evicted = list(_engines.values())
        _engines.clear()
        _key_locks.clear()
    for engine in evicted:
        engine.release()
