"""The OCR engines as the plugin's settings configure them: the "auto" engine's decision, the engine checks the
pages and the Model tab show, and the engine cache bound to ``ENGINE_CACHE_SIZE``.

``ocr/`` reads no settings; this module passes them in (``MODELS_DIR`` for what-to-do texts, surya's cache
location, the cache size). Nothing here loads a model. The decision for "auto" is taken once per process (at its
first use) and logged once; it is forgotten when the settings it depends on change.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from platformdirs import user_cache_dir

from marker_ls_plugin.conf import get_config, positive_int
from marker_ls_plugin.ocr import checkpoints, pool
from marker_ls_plugin.ocr.availability import download_problem, first_line, rapidocr_problem
from marker_ls_plugin.ocr.base import Engine

logger = logging.getLogger(__name__)


# --- the engine cache ----------------------------------------------------------------------------------------------


def get_engine(name: str, **options: Any) -> Engine:
    """``ocr.pool.get_engine`` with at most ``ENGINE_CACHE_SIZE`` engines loaded; a surya engine names the
    plugin's models directory in its what-to-do messages."""
    return pool.get_engine(name, cache_size=positive_int("ENGINE_CACHE_SIZE"), **_with_models_dir(name, options))


def drop_engine(name: str, **options: Any) -> bool:
    """Free the engine ``get_engine(name, **options)`` gave, if this process holds it."""
    return pool.drop_engine(name, **_with_models_dir(name, options))


def _with_models_dir(name: str, options: dict[str, Any]) -> dict[str, Any]:
    if name != "surya":
        return options
    return {"models_dir": get_config()["MODELS_DIR"], **options}


# --- surya's weights -----------------------------------------------------------------------------------------------


def surya_cache_dir() -> str:
    """surya's MODEL_CACHE_DIR, without importing surya (its settings import torch)."""
    configured = getattr(settings, "SURYA_MODEL_CACHE_DIR", None)
    if configured:
        return configured
    return os.path.join(user_cache_dir("datalab"), "models")


def surya_weights() -> tuple[bool, str]:
    """Whether surya's weights are on this machine, and where they were looked for (no torch import).

    Each checkpoint counts as present when its setting names a local checkpoint directory, or, unset, when
    surya's default is complete in surya's cache.
    """
    config = get_config()
    cache = surya_cache_dir()
    missing, local = [], []
    for kind, default in checkpoints.SURYA_DEFAULTS.items():
        path = config[checkpoints.SURYA_SETTING[kind]]
        if path:
            (local if os.path.isfile(os.path.join(path, "config.json")) else missing).append(path)
        elif not checkpoints.manifest_complete(os.path.join(cache, default)):
            missing.append(os.path.join(cache, default))
    if not missing:
        where = "local model directories" if len(local) == 2 else f"its cache ({cache})"
        return True, f"surya's weights are on this machine, in {where}"
    return False, f"surya's weights are not on this machine (looked for {', '.join(missing)})"


def resolve_surya_checkpoint(checkpoint: str | None = None, *, download: bool = True) -> str:
    """``checkpoints.resolve_surya_checkpoint``, its what-to-do text naming the plugin's models directory."""
    return checkpoints.resolve_surya_checkpoint(checkpoint, download=download,
                                                models_dir=get_config()["MODELS_DIR"])


# --- the engine checks ---------------------------------------------------------------------------------------------


def engine_problem(engine: str, options: dict | None = None) -> str | None:
    """Why ``engine`` with ``options`` (projects.engine_options) could not load here, with what to do; None
    when it could. Loads no model: surya's settings are imported (with torch), its checkpoints are looked up on
    disk, and a missing default is checked for a reachable download host."""
    options = options or {}
    if engine == "rapidocr":
        return rapidocr_problem()
    if engine == "surya":
        return checkpoints.surya_problem(options, models_dir=get_config()["MODELS_DIR"])
    return f"unknown OCR engine {engine!r}: choose surya or RapidOCR on the project's OCR page."


# --- "auto" --------------------------------------------------------------------------------------------------------


def auto_engine() -> tuple[str, str]:
    """The engine "auto" stands for in this process, and why; decided at the first call, then reused."""
    global _auto
    with _auto_lock:
        if _auto is None:
            _auto = _decide()
            logger.info("OCR engine \"auto\" is %s: %s", *_auto)
        return _auto


def clear_auto_engine() -> None:
    """Forget the decision (the settings it depends on changed; tests)."""
    global _auto
    with _auto_lock:
        _auto = None


def _decide() -> tuple[str, str]:
    if importlib.util.find_spec("surya") is None:
        return "rapidocr", "surya is not installed"
    try:
        from surya.settings import settings as surya_settings  # deferred: surya's settings import torch
    except Exception as exc:
        return "rapidocr", f"surya cannot be imported ({type(exc).__name__}: {first_line(exc)})"
    present, reason = surya_weights()
    if present:
        return "surya", reason
    from huggingface_hub import constants  # deferred with surya (only when its weights are missing)

    instead = "RapidOCR, which ships its models, pre-annotates instead"
    if constants.HF_HUB_OFFLINE:
        return "rapidocr", f"{reason} and downloads are off (HF_HUB_OFFLINE); {instead}"
    base_url = surya_settings.S3_BASE_URL
    problem = download_problem(base_url)
    if problem:
        return "rapidocr", f"{reason} and cannot be downloaded from {base_url}: {problem}; {instead}"
    return "surya", (f"surya's weights are not on this machine yet; they are downloaded from {base_url} "
                     "at first use")


_auto: tuple[str, str] | None = None
_auto_lock = threading.Lock()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in ("MARKER_LS", "SURYA_MODEL_CACHE_DIR"):
        clear_auto_engine()
