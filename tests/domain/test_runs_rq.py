"""The run lifecycle through real RQ workers on real Redis and the test's real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from mls_factories import make_project
from mls_helpers import wait_for
from mls_test_jobs import scenario

from marker_ls_plugin.conf import queue_backend
from marker_ls_plugin.domain import runs
from marker_ls_plugin.domain.queues import enqueue, job_id_for, job_status
from marker_ls_plugin.models import FineTuneRun

pytestmark = pytest.mark.usefixtures("redis_url")


def scripted_project(title: str, played: str):
    """A project whose runs play scenario ``played`` of mls_test_jobs.scripted_run (the workers' RUN_FUNCTION)."""
    project = make_project(title)
    project.description = scenario(played)
    project.save(update_fields=["description"])
    return project


def reload(run: FineTuneRun) -> FineTuneRun:
    run.refresh_from_db()
    return run


def wait_status(run, statuses, timeout=60):
    return wait_for(lambda: reload(run).status in statuses and run, timeout, message=f"run {run.pk} to be {statuses}")


def test_rq_is_the_backend_with_redis_configured():
    assert queue_backend() == "rq"


def test_run_goes_queued_running_succeeded(start_worker):
    project = make_project("rq succeed")
    run, created = runs.start_run(project, config={"max_steps": 3})
    assert created and run.status == "queued" and run.queue_backend == "rq"
    assert run.config["max_steps"] == 3

    worker = start_worker()
    wait_status(run, {"running", "succeeded"})
    seen_running = run.status == "running"
    wait_status(run, {"succeeded"})
    assert run.step == 3 and run.total_steps == 3 and run.progress == 1.0
    assert [m["loss"] for m in run.metrics] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert run.dataset == {"train_lines": 10, "val_lines": 2}
    assert "step 3 done" in run.log_tail
    assert run.started_at and run.finished_at and run.heartbeat_at and run.worker
    assert str(worker.pid) not in run.worker  # executed in RQ's work horse, a child of the worker
    assert seen_running or run.started_at < run.finished_at


def test_failure_records_the_exception(start_worker):
    project = scripted_project("rq fail", "fail")
    run, _ = runs.start_run(project)
    start_worker()
    wait_status(run, {"failed"})
    assert run.error == "RuntimeError: scripted failure: the GPU caught fire"
    assert run.traceback.startswith("Traceback") and "in scripted_run" in run.traceback
    assert "Traceback" not in run.log_tail and not run.retryable  # the run's own error: a retry would meet it again
    assert run.step == 1 and run.metrics == [{"step": 1, "loss": 2.5}]


def test_cancel_mid_run(start_worker):
    project = scripted_project("rq slow cancel", "slow")
    run, _ = runs.start_run(project)
    start_worker()
    wait_for(lambda: reload(run).step >= 5, 60, message="a few steps")
    runs.cancel_run(run)
    assert run.cancel_requested and run.status == "running"
    wait_status(run, {"cancelled"}, timeout=30)
    assert 5 <= run.step < run.total_steps
    assert run.finished_at and not run.error


def test_cancel_while_queued_never_runs(start_worker):
    project = make_project("rq succeed queued cancel")
    run, _ = runs.start_run(project)
    runs.cancel_run(run)
    assert run.status == "cancelled"
    start_worker("--burst").wait(60)
    assert reload(run).status == "cancelled" and run.started_at is None


def test_killed_worker_leaves_a_failed_run(start_worker):
    project = scripted_project("rq slow kill", "slow")
    run, _ = runs.start_run(project)
    worker = start_worker()
    wait_for(lambda: reload(run).step >= 3, 60, message="the run to make progress")
    # RQ's work horse runs the job in a session of its own: kill both, as when a host dies.
    horse_pid = int(run.worker.rsplit(":", 1)[1])
    os.killpg(worker.pid, signal.SIGKILL)
    os.kill(horse_pid, signal.SIGKILL)
    worker.wait(10)
    assert reload(run).status == "running"
    # Nothing reports for HEARTBEAT_TIMEOUT (6 s in tests); the next worker's periodic reaper then fails the run,
    # with no request and no `marker-ls reap` involved.
    start_worker()
    wait_status(run, {"failed"}, timeout=60)
    assert "no heartbeat" in run.error and "killed" in run.error
    # The project is free again.
    again, created = runs.start_run(project)
    assert created and again.pk != run.pk
    runs.cancel_run(again)


def test_two_concurrent_starts_give_one_run():
    project = make_project("rq succeed concurrent")
    barrier = threading.Barrier(4)
    results = []

    def start():
        try:
            barrier.wait()
            results.append(runs.start_run(project))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({run.pk for run, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert FineTuneRun.objects.filter(project=project).count() == 1
    runs.cancel_run(results[0][0])


def test_second_start_returns_the_active_run():
    project = make_project("rq succeed twice")
    first, created = runs.start_run(project)
    second, created_again = runs.start_run(project)
    assert created and not created_again and first.pk == second.pk
    runs.cancel_run(first)
    third, created_third = runs.start_run(project)
    assert created_third and third.pk != first.pk
    runs.cancel_run(third)


def test_invalid_config_writes_nothing():
    project = make_project("rq bad config")
    with pytest.raises(ValueError, match="unknown training arguments: nonsense"):
        runs.start_run(project, config={"nonsense": 1})
    assert not FineTuneRun.objects.filter(project=project).exists()


def aged(run: FineTuneRun, seconds: int = 60) -> FineTuneRun:
    """The run as if created ``seconds`` ago: past the grace its job has to appear in Redis."""
    FineTuneRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))
    return reload(run)


def test_queued_run_whose_job_never_reached_redis_is_failed_by_marker_ls_reap():
    # A server that died between recording the run and queuing its job: the row, no job.
    project = make_project("rq lost job")
    lost = aged(FineTuneRun.objects.create(project=project, queue_backend="rq", job_id=job_id_for("run")))
    young = FineTuneRun.objects.create(project=make_project("rq young"), queue_backend="rq", job_id=job_id_for("run"))
    aged(young, -300)  # created just before the reap, however long the reap's process takes to start
    queued, _ = runs.start_run(make_project("rq queued job"))
    aged(queued)
    result = subprocess.run([sys.executable, "-m", "marker_ls_plugin.cli", "reap"], env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"run {lost.pk}: its job {lost.job_id} is not in Redis" in result.stdout
    assert reload(lost).status == "failed" and "start the run again" in lost.error
    assert reload(young).status == "queued"  # its job may still be on its way
    assert reload(queued).status == "queued"  # its job is waiting for a worker
    # The project is free again.
    again, created = runs.start_run(project)
    assert created
    for run in (again, young, queued):
        runs.cancel_run(run)


def test_queued_run_whose_job_failed_before_it_started_is_failed(start_worker):
    project = make_project("rq job broken")
    run = FineTuneRun.objects.create(project=project, queue_backend="rq", job_id=job_id_for("run"))
    aged(run, -300)  # young however long the worker takes
    enqueue("marker_ls_plugin.no_such_module.execute_run", run.pk, queue="marker_ls_training", job_id=run.job_id)
    start_worker("--burst").wait(60)
    assert job_status(run.job_id, "marker_ls_training") == "failed"
    assert runs.reap_stale_runs(project=project) == []  # too young: a worker may still take it
    aged(run)
    assert [r.pk for r in runs.reap_stale_runs(project=project)] == [run.pk]
    assert reload(run).status == "failed" and f"its job {run.job_id} failed before the run started" in run.error
