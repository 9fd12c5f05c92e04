"""The periodic reaper: a thread in every process that executes runs (RQ workers, the embedded executor).

GET requests never write; runs that nothing will finish (runs.reap_stale_runs) are failed from here instead,
within about HEARTBEAT_TIMEOUT + one interval of their worker's death.
"""

from __future__ import annotations

import logging
import threading

from django.db import connection

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.runs import reap_stale_runs

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stopped = threading.Event()


def reap_interval() -> float:
    """Seconds between two reaps: a quarter of HEARTBEAT_TIMEOUT, at least one."""
    return max(1.0, get_config()["HEARTBEAT_TIMEOUT"] / 4)


def start_reaper() -> threading.Thread:
    """Start this process's reaper unless it runs already (a forked child starts its own)."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():  # after a fork, the parent's thread is not alive here
            _stopped.clear()
            _thread = threading.Thread(target=_loop, args=(reap_interval(),), daemon=True, name="marker-ls-reaper")
            _thread.start()
        return _thread


def stop_reaper(timeout: float = 10) -> None:
    """Stop this process's reaper (tests; the thread is a daemon otherwise)."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
    if thread is not None:
        _stopped.set()
        thread.join(timeout)


def _loop(interval: float) -> None:
    logger.info("reaper: every %.0f s, runs nothing will finish are failed", interval)
    while not _stopped.is_set():
        try:
            reap_stale_runs()
        except Exception:
            logger.exception("reaper: reaping failed; trying again in %.0f s", interval)
        finally:
            connection.close()  # no connection held between rounds: RQ forks its work horses meanwhile
        _stopped.wait(interval)
