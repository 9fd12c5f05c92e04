"""The plugin's configuration: documented defaults merged with ``settings.MARKER_LS``."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

# Every key is documented in README.md ("Settings"); tests/system/test_docs.py keeps the two in step.
DEFAULTS: dict[str, Any] = {
    # Redis URL for the plugin's RQ queues, e.g. "redis://localhost:6379/0". None: no Redis.
    "REDIS_URL": None,
    # "auto": RQ when REDIS_URL is set, else the embedded executor. Or force "rq" / "embedded".
    "QUEUE_BACKEND": "auto",
    # RQ queue names; GPU workers listen on the training queue.
    "TRAINING_QUEUE": "marker_ls_training",
    "INFERENCE_QUEUE": "marker_ls_inference",
    # Where registered OCR models live: <MODELS_DIR>/recognition/<name>/. None: <BASE_DATA_DIR>/marker_ls/models.
    "MODELS_DIR": None,
    # Seconds between worker heartbeats while a run executes.
    "HEARTBEAT_INTERVAL": 10,
    # A running run whose last heartbeat is older than this (seconds) is marked failed.
    "HEARTBEAT_TIMEOUT": 120,
    # RQ job timeout for a fine-tune run, in seconds.
    "RUN_TIMEOUT": 24 * 3600,
    # RQ job timeout for a pre-annotation batch, in seconds: a hung OCR batch frees its worker after this.
    "INFERENCE_TIMEOUT": 600,
    # Dotted path of the function a run executes: fn(context: marker_ls_plugin.domain.execution.RunContext).
    "RUN_FUNCTION": "marker_ls_plugin.domain.finetune.run_finetune",
    # Threads of the embedded executor (used without Redis).
    "EMBEDDED_WORKERS": 1,
    # Lines kept in a run's log tail.
    "LOG_TAIL_LINES": 200,
    # OCR engine of projects with no active model and no engine of their own: "surya", "rapidocr", or "auto":
    # surya when its weights are on this machine or can be downloaded, else rapidocr (decided once per process).
    "ENGINE": "auto",
    # surya checkpoints: None uses surya's defaults (downloaded once into its cache), or a local directory.
    "SURYA_RECOGNITION_CHECKPOINT": None,
    "SURYA_DETECTION_CHECKPOINT": None,
    # torch device for surya ("cpu", "cuda", "cuda:1"); None: CUDA when present, else CPU.
    "TORCH_DEVICE": None,
    # Loaded engines (model + detector) kept per process; the least recently used one is freed beyond this.
    "ENGINE_CACHE_SIZE": 2,
    # Pre-annotate tasks as they are imported (projects with an OCR-shaped labeling config).
    "PREANNOTATE_ON_IMPORT": True,
    # Tasks per pre-annotation job (one engine call per batch).
    "PREANNOTATE_BATCH_SIZE": 8,
    # "user:password" for the HTTP ML backend endpoints under /marker-ls/ml/; None: they answer 403.
    "ML_BACKEND_BASIC_AUTH": None,
    # Larger images are refused (decompression bombs); PIL's own default limit.
    "MAX_IMAGE_PIXELS": 89_478_485,
    # Activate a fine-tuned model for its project when it beats the model it started from.
    "AUTO_ACTIVATE": True,
    # ... by at least this much validation CER (absolute: 0.005 = half a point). Else the user activates it.
    "ACTIVATION_MARGIN": 0.005,
    # When a project's active model changes, queue predictions from it for the tasks nobody annotated yet.
    "REPREDICT_ON_ACTIVATE": True,
    # A run of the built-in fine-tune (RUN_FUNCTION's default) is refused before it starts with fewer annotated
    # lines than this in the training split ...
    "MIN_TRAIN_LINES": 20,
    # ... or than this in the validation split (what "before" and "after" CER are measured on).
    "MIN_VAL_LINES": 5,
}


def env_value(key: str) -> Any:
    """``MARKER_LS_<key>`` from the environment, typed as its default; the default when unset.

    The settings module builds ``MARKER_LS`` from these; processes without Django settings (the standalone ML
    backend) read the same variables the same way.
    """
    default = DEFAULTS[key]
    raw = os.environ.get(f"MARKER_LS_{key}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw or None


@cache
def get_config() -> dict[str, Any]:
    """Return the merged configuration (defaults overridden by settings.MARKER_LS)."""
    user = getattr(settings, "MARKER_LS", {}) or {}
    config = dict(DEFAULTS)
    config.update(user)
    if config["MODELS_DIR"] is None:
        base = getattr(settings, "BASE_DATA_DIR", None) or os.getcwd()
        config["MODELS_DIR"] = os.path.join(base, "marker_ls", "models")
    return config


def unknown_keys() -> list[str]:
    return sorted(set(getattr(settings, "MARKER_LS", {}) or {}) - set(DEFAULTS))


def positive_int(key: str) -> int:
    """The setting ``key`` as a whole number of at least 1, or ImproperlyConfigured naming it."""
    value = get_config()[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"MARKER_LS['{key}'] (environment MARKER_LS_{key}) must be a whole number of at "
                                   f"least 1, got {value!r}")
    return value


def queue_backend() -> str:
    """'rq' or 'embedded', after resolving 'auto'."""
    config = get_config()
    backend = config["QUEUE_BACKEND"]
    if backend == "auto":
        return "rq" if config["REDIS_URL"] else "embedded"
    return backend


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "MARKER_LS":
        get_config.cache_clear()
