"""Run operations that need no worker: Redis down or hanging, orphaned embedded runs, cancel rules, the reaper."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from mls_factories import make_project
from mls_helpers import free_port, wait_for
from projects.models import Project
from tasks.models import Task

from marker_ls_plugin import jobs
from marker_ls_plugin.domain import execution, runs
from marker_ls_plugin.domain.preannotation import sweep
from marker_ls_plugin.models import FineTuneRun, ProjectConfig


def test_redis_down_keeps_the_run_with_a_clear_reason():
    # django-rq reads RQ_QUEUES once at import, so this runs in a process configured with a dead Redis.
    code = (
        "import django; django.setup()\n"
        "from mls_factories import make_project; from marker_ls_plugin.domain import runs\n"
        "run, created = runs.start_run(make_project('redis down'))\n"
        "print(run.pk, created, run.status, run.error, sep='|')\n"
    )
    env = {**os.environ, "MARKER_LS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    pk, created, status, error = result.stdout.strip().splitlines()[-1].split("|")
    assert created == "True" and status == "failed"
    assert error.startswith("could not be queued: cannot reach Redis for queue 'marker_ls_training'")
    # Nothing is lost: the run and its arguments stay recorded, and the project can start again.
    run = FineTuneRun.objects.get(pk=int(pk))
    assert run.config["learning_rate"] == 5e-5 and run.error == error
    again, created_again = runs.start_run(run.project)
    assert created_again
    runs.cancel_run(again)


def test_queued_embedded_run_of_a_stopped_server_is_failed():
    project = make_project("orphan")
    orphan = FineTuneRun.objects.create(project=project, queue_backend="embedded", job_id="embedded:999999:abc")
    assert orphan in runs.reap_stale_runs(project=project)
    orphan.refresh_from_db()
    assert orphan.status == "failed" and "stopped before it ran" in orphan.error


def test_live_heartbeats_are_not_reaped():
    project = make_project("alive")
    run = FineTuneRun.objects.create(project=project, status="running", heartbeat_at=timezone.now(),
                                     queue_backend="rq", job_id="x")
    assert runs.reap_stale_runs(project=project) == []
    runs.cancel_run(run)
    assert run.status == "running" and run.cancel_requested


def test_finished_runs_cannot_be_cancelled_or_finished_again():
    project = make_project("finished")
    run = FineTuneRun.objects.create(project=project, status="succeeded", queue_backend="rq", job_id="y")
    runs.cancel_run(run)
    assert run.status == "succeeded" and not run.cancel_requested
    assert execution.finish(run, FineTuneRun.Status.FAILED, error="late") is False
    assert run.status == "succeeded" and run.error == ""


@contextmanager
def hanging_redis():
    """A listening socket that accepts connections and never answers: a Redis that hangs, not one that refuses."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def run_with_redis(url: str, code: str) -> list[str]:
    """Run ``code`` in a process configured with Redis at ``url`` (django-rq reads RQ_QUEUES once, at import)."""
    env = {**os.environ, "MARKER_LS_REDIS_URL": url}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1].split("|")


def test_redis_that_hangs_fails_a_run_start_within_seconds():
    code = (
        "import time; from mls_factories import make_project; from marker_ls_plugin.domain import runs\n"
        "started = time.monotonic(); run, created = runs.start_run(make_project('redis hangs'))\n"
        "print(run.pk, created, run.status, round(time.monotonic() - started, 1), run.error, sep='|')\n"
    )
    with hanging_redis() as (url, accepted):
        pk, created, status, seconds, error = run_with_redis(url, code)
        assert accepted, "the client never connected: this would test a refusing Redis, not a hanging one"
    assert created == "True" and status == "failed" and float(seconds) < 15
    assert error.startswith("could not be queued: cannot reach Redis for queue 'marker_ls_training'")
    assert "Timeout" in error
    assert FineTuneRun.objects.get(pk=int(pk)).error == error


def test_an_import_while_redis_hangs_keeps_its_tasks_for_the_sweep(redis_url):
    code = (
        "import time; from django.db import transaction; from tasks.models import Task\n"
        "from mls_factories import make_project; from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG\n"
        "project = make_project('import while redis hangs'); project.label_config = OCR_PRESET_CONFIG\n"
        "project.save(); started = time.monotonic()\n"
        "with transaction.atomic():\n"
        "    for i in range(3):\n"
        "        Task.objects.create(project=project, data={'image': f'/data/upload/{i}.png'})\n"
        "print(project.pk, round(time.monotonic() - started, 1), sep='|')\n"
    )
    with hanging_redis() as (url, accepted):
        project_pk, seconds = run_with_redis(url, code)
        assert accepted
    assert float(seconds) < 12  # one timeout: after it, the other tasks' enqueues fail at once
    project = Project.objects.get(pk=int(project_pk))
    assert Task.objects.filter(project=project).count() == 3
    error = ProjectConfig.objects.get(project=project).engine_error
    assert "pre-annotation could not be queued" in error and "Timeout" in error
    assert sweep(project) == 3  # with Redis back, the sweep queues what the import could not


@pytest.fixture
def background_reaper():
    from marker_ls_plugin.domain import queues, reaper

    reaper.stop_reaper()  # one an earlier test started (its embedded executor) would reap on its own schedule
    yield queues
    reaper.stop_reaper()
    executor = queues._executors.pop("marker_ls_reaper_test", None)
    if executor is not None:
        executor.shutdown()


def test_the_embedded_executor_reaps_dead_runs_periodically(background_reaper):
    project = make_project("embedded reaper")
    dead = FineTuneRun.objects.create(project=project, status="running", queue_backend="embedded",
                                      heartbeat_at=timezone.now() - timedelta(minutes=5), job_id="embedded:1:dead")
    background_reaper.get_embedded_executor("marker_ls_reaper_test")
    wait_for(lambda: FineTuneRun.objects.get(pk=dead.pk).status == "failed", 20, message="the periodic reap")
    assert "no heartbeat" in FineTuneRun.objects.get(pk=dead.pk).error


def execute(project, function: str) -> FineTuneRun:
    run = FineTuneRun.objects.create(project=project, queue_backend="rq", job_id=f"rq:{function}")
    with override_settings(MARKER_LS={**settings.MARKER_LS, "RUN_FUNCTION": f"mls_test_jobs.{function}"}):
        assert jobs.execute_run(run.pk) == "failed"
    run.refresh_from_db()
    return run


def test_an_error_is_one_line_with_its_traceback_apart_and_only_outside_failures_retry():
    project = make_project("retryable")
    broken = execute(project, "broken_run")
    assert broken.error == "RuntimeError: CUDA out of memory."
    assert broken.traceback.startswith("Traceback (most recent call last):")
    assert "Tried to allocate 2.00 GiB" in broken.traceback and "in broken_run" in broken.traceback
    assert broken.log_tail == "training started"  # the log keeps the run's own lines
    assert not broken.retryable and not broken.can_retry
    with pytest.raises(ValueError, match=r"failed \(RuntimeError: CUDA out of memory.\), and a retry would fail"):
        runs.retry_run(broken)

    timed_out = execute(project, "timed_out_run")
    assert timed_out.error == "JobTimeoutException: Task exceeded maximum timeout value (5 seconds)"
    assert timed_out.retryable
    retry, created = runs.retry_run(timed_out)
    assert created and retry.retry_of == timed_out and list(timed_out.retries.all()) == [retry]
    runs.cancel_run(retry)
    retry.refresh_from_db()
    assert retry.status == "cancelled" and retry.can_retry  # a cancelled run can be started again
    again, _ = runs.retry_run(retry)
    assert again.retry_of == retry
    runs.cancel_run(again)


def test_reaped_runs_are_retryable():
    project = make_project("reaped retryable")
    stale = FineTuneRun.objects.create(project=project, status="running", queue_backend="rq", job_id="z",
                                       heartbeat_at=timezone.now() - timedelta(hours=1))
    orphan = FineTuneRun.objects.create(project=make_project("orphan retryable"), queue_backend="embedded",
                                        job_id="embedded:999999:def")
    for run in (stale, orphan):
        assert run in runs.reap_stale_runs(project=run.project)
        run.refresh_from_db()
        assert run.status == "failed" and run.retryable and run.can_retry and "\n" not in run.error
