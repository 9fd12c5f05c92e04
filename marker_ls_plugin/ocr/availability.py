"""Which OCR engine can run here: the "auto" engine's decision, and cheap checks that an engine could load.

Nothing here loads a model. The decision for "auto" is taken once per process (at its first use) and logged once;
the checks say what is wrong and what to do, in the words the project's OCR page, Label Studio's Model tab and
pre-annotation errors all show.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import threading
import time
from urllib.parse import urlsplit

from django.core.signals import setting_changed
from django.dispatch import receiver

from marker_ls_plugin.conf import get_config

logger = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "surya", "rapidocr")
# surya-ocr 0.17.1's default checkpoints, as its downloader lays them out in its cache.
SURYA_DEFAULTS = {"recognition": "text_recognition/2025_09_23", "detection": "text_detection/2025_05_07"}
SURYA_SETTING = {"recognition": "SURYA_RECOGNITION_CHECKPOINT", "detection": "SURYA_DETECTION_CHECKPOINT"}
PROBE_TIMEOUT = 3.0  # seconds the "auto" decision waits for surya's download host
PROBE_TTL = 60.0  # seconds a probe's answer is reused by the engine checks (pages, the Model tab)


# --- what to do ----------------------------------------------------------------------------------------------------


def surya_fix(cache_dir: str | None = None) -> str:
    """How to make surya's weights available, or to use RapidOCR instead (one paragraph, no Python syntax)."""
    from marker_ls_plugin.domain.registry import TOKENIZER_FILES

    cache = cache_dir or surya_cache_dir()
    models_dir = get_config()["MODELS_DIR"]
    return (
        "What to do: switch the project to RapidOCR on its OCR page (one click; CPU, offline). "
        "Or give surya its weights: set MARKER_LS_SURYA_RECOGNITION_CHECKPOINT and "
        "MARKER_LS_SURYA_DETECTION_CHECKPOINT to local checkpoint directories (a recognition checkpoint directory "
        f"holds config.json, *.safetensors and the tokenizer files {', '.join(TOKENIZER_FILES)}), or set "
        "MODEL_CACHE_DIR to a copy of surya's cache (MODEL_CACHE_DIR/"
        f"{SURYA_DEFAULTS['recognition']}/ and {SURYA_DEFAULTS['detection']}/, each with its manifest.json; "
        f"looked in {cache}); changing these environment variables needs a restart of Label Studio and its "
        "workers. A recognition model needs no restart: put its checkpoint directory under "
        f"{os.path.join(models_dir, 'recognition')}/ (one directory per model, its name the model's), run "
        "`marker-ls models scan`, then pick the model on the project's OCR page (the detector's weights are still "
        "needed)."
    )


def surya_import_problem(exc: BaseException) -> str:
    return (f"surya cannot be imported ({type(exc).__name__}: {first_line(exc)}). Install it with "
            "pip install --no-deps surya-ocr==0.17.1 (README, Installation) and restart Label Studio and its "
            "workers, or switch the project to RapidOCR on its OCR page.")


def network_reason(exc: BaseException) -> str:
    """One line for a failed download: what went wrong and the innermost error's class, no nested dump."""
    seen, inner = set(), exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if type(inner).__name__ == "NameResolutionError" or isinstance(inner, socket.gaierror):
            return f"no network ({type(inner).__name__})"
        nested = getattr(inner, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        if not isinstance(nested, BaseException):
            nested = (inner.args[0] if inner.args and isinstance(inner.args[0], BaseException)
                      else inner.__cause__ or inner.__context__)
        if nested is None:
            break
        inner = nested
    name = type(inner).__name__
    if "refused" in str(inner).lower():
        return f"connection refused ({name})"
    if "timeout" in name.lower() or "timed out" in str(inner).lower():
        return f"timed out ({name})"
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} ({type(exc).__name__})"
    return f"{first_line(inner)} ({name})" if first_line(inner) else name


def first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


# --- surya's weights -----------------------------------------------------------------------------------------------


def surya_cache_dir() -> str:
    """surya's MODEL_CACHE_DIR, without importing surya (its settings import torch)."""
    from django.conf import settings

    configured = getattr(settings, "SURYA_MODEL_CACHE_DIR", None)
    if configured:
        return configured
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("datalab"), "models")


def manifest_complete(directory: str) -> bool:
    """Whether a checkpoint downloaded by surya is complete: its manifest.json and every file it lists."""
    try:
        with open(os.path.join(directory, "manifest.json")) as handle:
            files = json.load(handle)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(os.path.exists(os.path.join(directory, name)) for name in files)


def surya_weights() -> tuple[bool, str]:
    """Whether surya's weights are on this machine, and where they were looked for (no torch import).

    Each checkpoint counts as present when its setting names a local checkpoint directory, or, unset, when
    surya's default is complete in surya's cache.
    """
    config = get_config()
    cache = surya_cache_dir()
    missing, local = [], []
    for kind, default in SURYA_DEFAULTS.items():
        path = config[SURYA_SETTING[kind]]
        if path:
            (local if os.path.isfile(os.path.join(path, "config.json")) else missing).append(path)
        elif not manifest_complete(os.path.join(cache, default)):
            missing.append(os.path.join(cache, default))
    if not missing:
        where = "local model directories" if len(local) == 2 else f"its cache ({cache})"
        return True, f"surya's weights are on this machine, in {where}"
    return False, f"surya's weights are not on this machine (looked for {', '.join(missing)})"


def download_problem(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``url``'s host cannot be reached within ``timeout`` seconds (a TCP connection), or None.

    Name resolution ignores socket timeouts, so the probe runs on a thread that is given up on after ``timeout``.
    Answers are reused for PROBE_TTL seconds.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    with _probe_lock:
        cached = _probes.get(address)
        if cached and time.monotonic() - cached[0] < PROBE_TTL:
            return cached[1]
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(network_reason(exc))

    thread = threading.Thread(target=probe, name="marker-ls-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    problem = outcome[0] if outcome else f"no answer from {address[0]} within {timeout:g} s"
    with _probe_lock:
        _probes[address] = (time.monotonic(), problem)
    return problem


_probes: dict[tuple[str, int], tuple[float, str | None]] = {}
_probe_lock = threading.Lock()


# --- the engine checks ---------------------------------------------------------------------------------------------


def engine_problem(engine: str, options: dict | None = None) -> str | None:
    """Why ``engine`` with ``options`` (preannotation.engine_options) could not load here, with what to do; None
    when it could. Loads no model: surya's settings are imported (with torch), its checkpoints are looked up on
    disk, and a missing default is checked for a reachable download host."""
    options = options or {}
    if engine == "rapidocr":
        missing = [name for name in ("rapidocr", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            return (f"RapidOCR cannot be imported ({', '.join(missing)} not installed): pip install rapidocr "
                    "onnxruntime, then restart Label Studio and its workers.")
        return None
    if engine == "surya":
        return _surya_problem(options)
    return f"unknown OCR engine {engine!r}: choose surya or RapidOCR on the project's OCR page."


def _surya_problem(options: dict) -> str | None:
    from marker_ls_plugin.ocr.engines import _surya_checkpoint
    from marker_ls_plugin.ocr.types import EngineUnavailable

    try:
        from surya.settings import settings
    except Exception as exc:  # a broken install fails in many ways, all of them "cannot be imported"
        return surya_import_problem(exc)
    defaults = {"recognition": settings.FOUNDATION_MODEL_CHECKPOINT, "detection": settings.DETECTOR_MODEL_CHECKPOINT}
    for kind, default in defaults.items():
        try:
            _surya_checkpoint(options.get(f"{kind}_checkpoint"), default, kind, download=False)
        except EngineUnavailable as exc:
            return str(exc)
    return None


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
        from surya.settings import settings
    except Exception as exc:
        return "rapidocr", f"surya cannot be imported ({type(exc).__name__}: {first_line(exc)})"
    present, reason = surya_weights()
    if present:
        return "surya", reason
    from huggingface_hub import constants

    instead = "RapidOCR, which ships its models, pre-annotates instead"
    if constants.HF_HUB_OFFLINE:
        return "rapidocr", f"{reason} and downloads are off (HF_HUB_OFFLINE); {instead}"
    problem = download_problem(settings.S3_BASE_URL)
    if problem:
        return "rapidocr", f"{reason} and cannot be downloaded from {settings.S3_BASE_URL}: {problem}; {instead}"
    return "surya", (f"surya's weights are not on this machine yet; they are downloaded from {settings.S3_BASE_URL} "
                     "at first use")


_auto: tuple[str, str] | None = None
_auto_lock = threading.Lock()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in ("MARKER_LS", "SURYA_MODEL_CACHE_DIR"):
        clear_auto_engine()
