"""The inference queue's own job timeout, on real Redis with a real RQ worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from mls_factories import make_project
from mls_helpers import ROOT, stop_process
from tasks.models import Task

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain.preannotation import schedule
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

pytestmark = pytest.mark.usefixtures("redis_url")


def inference_jobs():
    from django_rq import get_queue

    queue = get_queue(get_config()["INFERENCE_QUEUE"])
    return queue, [queue.fetch_job(job_id) for job_id in queue.get_job_ids()]


def ocr_project_with_tasks(title: str, count: int):
    project = make_project(title)
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    return project, [Task.objects.create(project=project, data={"image": f"/data/upload/none-{i}.png"}).pk
                     for i in range(count)]


def test_queues_have_their_own_default_timeouts():
    config = get_config()
    queues = django_settings.RQ_QUEUES
    assert queues[config["INFERENCE_QUEUE"]]["DEFAULT_TIMEOUT"] == config["INFERENCE_TIMEOUT"] == 600
    assert queues[config["TRAINING_QUEUE"]]["DEFAULT_TIMEOUT"] == config["RUN_TIMEOUT"] == 24 * 3600


def test_every_preannotation_job_carries_the_inference_timeout():
    project, task_ids = ocr_project_with_tasks("timeout carried", 3)
    queue, jobs = inference_jobs()
    assert jobs and {job.timeout for job in jobs} == {600}  # the import hook's jobs (the default)
    queue.empty()
    with override_settings(MARKER_LS={**django_settings.MARKER_LS, "INFERENCE_TIMEOUT": 45,
                                      "PREANNOTATE_BATCH_SIZE": 2}):
        assert schedule(project, task_ids) == 3
    queue, jobs = inference_jobs()
    assert [job.args[1] for job in jobs] == [task_ids[:2], task_ids[2:]]
    assert [job.timeout for job in jobs] == [45, 45]
    queue.empty()


def test_a_bad_inference_timeout_names_the_setting():
    project, task_ids = ocr_project_with_tasks("timeout bad", 1)
    for bad in (0, -5, "600", 2.5):
        with override_settings(MARKER_LS={**django_settings.MARKER_LS, "INFERENCE_TIMEOUT": bad}):
            with pytest.raises(ImproperlyConfigured, match=r"MARKER_LS\['INFERENCE_TIMEOUT'\]"):
                schedule(project, task_ids)


def test_bad_timeouts_and_cache_sizes_are_reported_at_start_up(tmp_path):
    from marker_ls_plugin.wiring.checks import check_configuration

    good = {"REDIS_URL": None, "MODELS_DIR": str(tmp_path)}
    with override_settings(MARKER_LS=good):
        assert check_configuration() == []
    with override_settings(MARKER_LS={**good, "INFERENCE_TIMEOUT": 0, "ENGINE_CACHE_SIZE": "3"}):
        messages = check_configuration()
    assert [message.id for message in messages] == ["marker_ls.E005"] * 2
    assert "MARKER_LS['INFERENCE_TIMEOUT']" in messages[0].msg and "got 0" in messages[0].msg
    assert "MARKER_LS_ENGINE_CACHE_SIZE" in messages[1].msg and "got '3'" in messages[1].msg


def test_a_hung_job_on_the_inference_queue_is_killed_after_the_timeout(tmp_path):
    """A job queued with no timeout of its own gets the queue's default from MARKER_LS_INFERENCE_TIMEOUT."""
    from rq.job import Job, JobStatus

    queue, _ = inference_jobs()
    queue.empty()
    env = {**os.environ, "MARKER_LS_INFERENCE_TIMEOUT": "2"}
    enqueue = ("import django; django.setup()\n"
               "from marker_ls_plugin.domain.queues import enqueue\n"
               "enqueue('time.sleep', 120, queue='marker_ls_inference', job_id='hung-ocr-batch')\n")
    subprocess.run([sys.executable, "-c", enqueue], env=env, cwd=ROOT, check=True, timeout=120,
                   capture_output=True)
    job = Job.fetch("hung-ocr-batch", connection=queue.connection)
    assert job.timeout == 2

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "django", "rqworker", "marker_ls_inference", "--burst"],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        worker.wait(90)
    finally:
        stop_process(worker)
        log.close()
    assert time.monotonic() - started < 60, "the worker waited for the whole sleep"
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (job.latest_result().exc_string or ""), (tmp_path / "worker.log").read_text()
