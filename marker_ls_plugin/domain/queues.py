"""Where jobs go: the plugin's RQ queues, or an in-process executor when there is no Redis."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django_rq
from django.db import close_old_connections, transaction
from django.dispatch import Signal
from django.utils.module_loading import import_string
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from marker_ls_plugin.conf import get_config, queue_backend

logger = logging.getLogger(__name__)

_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()
# Sent when this process starts executing jobs itself (no Redis): the process that executes runs also reaps the
# dead ones (wiring/signals.py starts the reaper).
embedded_executor_started = Signal()


class QueueUnavailable(RuntimeError):
    """The configured queue cannot take the job (for example Redis is down)."""


def get_queue(name: str):
    """The django-rq queue called ``name`` (only meaningful with the RQ backend)."""
    return django_rq.get_queue(name)


def get_embedded_executor(name: str) -> ThreadPoolExecutor:
    """The process-wide executor that stands in for queue ``name`` without Redis."""
    with _executors_lock:
        if name not in _executors:
            _executors[name] = ThreadPoolExecutor(
                max_workers=get_config()["EMBEDDED_WORKERS"], thread_name_prefix=f"marker-ls-{name}"
            )
            embedded_executor_started.send(sender=get_embedded_executor, name=name)
        return _executors[name]


def embedded_job_id() -> str:
    """A job id that names this process, so a restarted server can tell its orphans."""
    return f"embedded:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def job_id_for(kind: str) -> str:
    """A fresh job id for the configured backend."""
    return embedded_job_id() if queue_backend() == "embedded" else f"marker-ls-{kind}-{uuid.uuid4().hex[:16]}"


def _run_embedded(func_path: str, args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        import_string(func_path)(*args)
    except Exception:
        logger.exception("embedded job %s%r failed", func_path, args)
    finally:
        close_old_connections()


# After Redis failed to answer, enqueues fail at once for a while instead of each waiting for the timeout
# (a storage sync queues its tasks one by one): the work is not lost, the sweep queues it later.
REDIS_RETRY_AFTER_SECONDS = 30.0
_redis_down: dict[str, Any] = {"since": None, "reason": ""}


def _refuse_while_redis_down(queue: str) -> None:
    since = _redis_down["since"]
    if since is not None and time.monotonic() - since < REDIS_RETRY_AFTER_SECONDS:
        raise QueueUnavailable(f"cannot reach Redis for queue {queue!r}: {_redis_down['reason']} "
                               f"({time.monotonic() - since:.0f} s ago; tried again after "
                               f"{REDIS_RETRY_AFTER_SECONDS:.0f} s)")


def enqueue(func_path: str, *args: Any, queue: str, job_id: str, timeout: int | None = None) -> str:
    """Enqueue ``func_path(*args)`` on ``queue`` and return the backend's name.

    With the embedded backend the job is submitted once the current transaction commits, so it
    always sees the rows the caller just wrote, and it never runs inside the request.
    """
    backend = queue_backend()
    if backend == "rq":
        _refuse_while_redis_down(queue)
        try:
            get_queue(queue).enqueue(func_path, *args, job_id=job_id, job_timeout=timeout)
        except RedisError as exc:
            _redis_down.update(since=time.monotonic(), reason=str(exc))
            raise QueueUnavailable(f"cannot reach Redis for queue {queue!r}: {exc}") from exc
        _redis_down.update(since=None)
        return backend
    submit: Callable[[], Any] = lambda: get_embedded_executor(queue).submit(_run_embedded, func_path, args)
    transaction.on_commit(submit)
    return backend


def job_status(job_id: str, queue: str) -> str | None:
    """RQ's status of job ``job_id`` ("queued", "started", "failed", ...), or None when Redis has no such job."""
    try:
        status = Job.fetch(job_id, connection=get_queue(queue).connection).get_status()
    except NoSuchJobError:
        return None
    except RedisError as exc:
        raise QueueUnavailable(f"cannot reach Redis for queue {queue!r}: {exc}") from exc
    return getattr(status, "value", status)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (an embedded run's server, a test's worker)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
