"""Run operations that need no worker: Redis down, orphaned embedded runs, cancel rules."""

from __future__ import annotations

import os
import subprocess
import sys

from django.utils import timezone
from mls_factories import make_project
from mls_helpers import free_port

from marker_ls_plugin import runs
from marker_ls_plugin.models import FineTuneRun


def test_redis_down_keeps_the_run_with_a_clear_reason():
    # django-rq reads RQ_QUEUES once at import, so this runs in a process configured with a dead Redis.
    code = (
        "import django; django.setup()\n"
        "from mls_factories import make_project; from marker_ls_plugin import runs\n"
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
    assert runs.finish(run, FineTuneRun.Status.FAILED, error="late") is False
    assert run.status == "succeeded" and run.error == ""
