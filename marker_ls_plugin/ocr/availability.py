"""Cheap checks on what could run here, without settings: can a download host be reached, is RapidOCR
installed, and one-line reasons for errors.

The "auto" engine's decision and the checks that read the plugin's settings are Django's side
(``marker_ls_plugin.domain.engines``); surya's checkpoints are checked in ``checkpoints.py``.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from urllib.parse import urlsplit

ENGINE_CHOICES = ("auto", "surya", "rapidocr")
PROBE_TIMEOUT = 3.0  # seconds the "auto" decision waits for surya's download host
PROBE_TTL = 60.0  # seconds a probe's answer is reused by the engine checks (pages, the Model tab)


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


def rapidocr_problem() -> str | None:
    """Why RapidOCR could not load here (a package missing), with what to do; None when it could."""
    missing = [name for name in ("rapidocr", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"RapidOCR cannot be imported ({', '.join(missing)} not installed): pip install rapidocr "
                "onnxruntime, then restart Label Studio and its workers.")
    return None


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
