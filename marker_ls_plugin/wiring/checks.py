"""System checks: misconfiguration is reported at start-up with how to fix it.

Ids are stable and listed in README.md ("System checks").
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata

import redis
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from marker_ls_plugin.conf import get_config, positive_int, queue_backend, unknown_keys
from marker_ls_plugin.ocr.availability import ENGINE_CHOICES

SURYA_VERSION = "0.17.1"


@register("marker_ls")
def check_configuration(app_configs=None, **kwargs):
    messages = []
    config = get_config()
    for key in unknown_keys():
        messages.append(
            Warning(f"MARKER_LS has an unknown key {key!r}; it is ignored.", hint="See README.md, Settings.",
                    id="marker_ls.W001")
        )
    if config["QUEUE_BACKEND"] not in ("auto", "rq", "embedded"):
        messages.append(
            Error(f"MARKER_LS['QUEUE_BACKEND'] is {config['QUEUE_BACKEND']!r}.",
                  hint="Use 'auto', 'rq' or 'embedded'.", id="marker_ls.E001")
        )
    elif queue_backend() == "rq":
        messages.extend(_check_redis(config["REDIS_URL"]))
    messages.extend(_check_models_dir(config["MODELS_DIR"]))
    if config["ENGINE"] not in ENGINE_CHOICES:
        messages.append(
            Error(f"MARKER_LS_ENGINE is {config['ENGINE']!r}.",
                  hint=f"Set MARKER_LS_ENGINE to {', '.join(ENGINE_CHOICES)} (auto: surya when its weights are "
                       "available, else rapidocr).", id="marker_ls.E006")
        )
    if config["HEARTBEAT_TIMEOUT"] <= 2 * config["HEARTBEAT_INTERVAL"]:
        messages.append(
            Error("MARKER_LS['HEARTBEAT_TIMEOUT'] must be more than twice HEARTBEAT_INTERVAL.",
                  hint="Live runs would be marked failed.", id="marker_ls.E004")
        )
    messages.extend(_check_positive_ints("INFERENCE_TIMEOUT", "ENGINE_CACHE_SIZE"))
    return messages


def _check_positive_ints(*keys: str) -> list:
    messages = []
    for key in keys:
        try:
            positive_int(key)
        except ImproperlyConfigured as exc:
            messages.append(Error(f"{exc}.", hint="See README.md, Settings.", id="marker_ls.E005"))
    return messages


def _check_redis(url: str | None) -> list:
    if not url:
        return [Error("The RQ queue backend is selected but MARKER_LS['REDIS_URL'] is not set.",
                      hint="Set MARKER_LS_REDIS_URL=redis://host:6379/0, or use QUEUE_BACKEND 'embedded'.",
                      id="marker_ls.E002")]
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return [Error(f"Redis at {url} is unreachable: {exc}.",
                      hint="Start Redis or fix MARKER_LS_REDIS_URL; without Redis, unset it to use the "
                           "embedded executor.", id="marker_ls.E002")]
    return []


def _check_models_dir(path: str) -> list:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as exc:
        return [Error(f"The models directory {path} is not writable: {exc}.",
                      hint="Set MARKER_LS_MODELS_DIR to a writable directory shared with the workers.",
                      id="marker_ls.E003")]
    return []


@register("marker_ls")
def check_surya(app_configs=None, **kwargs):
    try:
        installed = metadata.version("surya-ocr")
    except metadata.PackageNotFoundError:
        installed = None
    if installed == SURYA_VERSION:
        return []
    found = f"surya-ocr {installed} is installed" if installed else "surya-ocr is not installed"
    return [Warning(f"{found}; the OCR engine needs surya-ocr {SURYA_VERSION}.",
                    hint=f"pip install --no-deps surya-ocr=={SURYA_VERSION} (see README.md, Installation).",
                    id="marker_ls.W002")]
