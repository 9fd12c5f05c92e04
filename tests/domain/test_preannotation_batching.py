"""Many small imports share engine batches: one drain job per project waits, it reads what is pending when it starts."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.test import override_settings
from mls_factories import make_project
from mls_helpers import ROOT, stop_process, wait_for
from PIL import Image
from tasks.models import Prediction, Task

from marker_ls_plugin import jobs
from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain import preannotation, predictions, queues, reaper
from marker_ls_plugin.domain.queues import get_embedded_executor
from marker_ls_plugin.models import TaskOCR
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.ocr.types import OCRLine, PageOCR


class GatedEngine:
    """Reads every page of a call at once (as surya does); its first call waits for ``gate``."""

    batches_pages = True
    max_page_side = None

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.calls: list[int] = []  # pages per call
        self.delay = 0.0  # seconds a call takes

    def recognize_pages(self, images):
        if not self.calls:
            assert self.gate.wait(60), "the test never opened the gate"
        self.calls.append(len(images))
        time.sleep(self.delay)
        return [PageOCR(image.width, image.height, [OCRLine([(1, 1), (9, 1), (9, 5), (1, 5)], "word", 0.9)])
                for image in images]


def ocr_project(title):
    project = make_project(title)
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    return project


def import_page(project, name):
    """One import of one page: its own request, its own transaction (as Label Studio commits each)."""
    buffer = io.BytesIO()
    Image.new("RGB", (120, 40), "white").save(buffer, format="PNG")
    path = default_storage.save(f"upload/{project.pk}/{name}.png", ContentFile(buffer.getvalue()))
    return Task.objects.create(project=project, data={"image": f"/data/{path}"})


def predicted(tasks) -> int:
    return Prediction.objects.filter(task__in=tasks).values("task").distinct().count()


@pytest.fixture
def embedded(monkeypatch):
    """The embedded executor with a counting drain entry point and an engine that waits for ``gate``."""
    gate = threading.Event()
    engine = GatedEngine(gate)
    drains: list[int] = []
    original = jobs.preannotate_pending
    monkeypatch.setattr(predictions, "get_engine", lambda name, **options: engine)
    monkeypatch.setattr(jobs, "preannotate_pending", lambda pk: drains.append(pk) or original(pk))
    with override_settings(MARKER_LS={**django_settings.MARKER_LS, "QUEUE_BACKEND": "embedded",
                                      "PREANNOTATE_BATCH_SIZE": 8}):
        yield engine, drains
        gate.set()
        get_embedded_executor(get_config()["INFERENCE_QUEUE"]).submit(lambda: None).result(120)  # one worker: the
        # jobs queued before have ended
    reaper.stop_reaper()  # the embedded executor started it; it must not outlive the test (or the database)
    queues._executors.pop(get_config()["INFERENCE_QUEUE"]).shutdown()


def test_many_small_imports_make_a_few_engine_batches_and_every_task_is_predicted(embedded):
    engine, drains = embedded
    project = ocr_project("many small imports")
    tasks = [import_page(project, f"p{i}") for i in range(12)]  # the first job waits in the engine meanwhile
    engine.gate.set()
    wait_for(lambda: predicted(tasks) == 12, 60, message="every imported task to be predicted")
    get_embedded_executor(get_config()["INFERENCE_QUEUE"]).submit(lambda: None).result(60)
    # the running job and at most one waiting for the imports made while it ran
    assert len(drains) <= 2, drains
    assert sum(engine.calls) == 12 and len(engine.calls) <= 3, engine.calls  # 1 page, then batches of up to 8
    assert max(engine.calls) <= 8


def test_a_drain_job_leaves_what_would_not_fit_in_its_timeout_to_the_next(embedded, monkeypatch):
    """A batch starts only while twice the slowest so far fits in INFERENCE_TIMEOUT: a long backlog is drained by a
    chain of jobs, each well inside the timeout RQ kills jobs at, and nothing is lost."""
    engine, drains = embedded
    engine.gate.set()
    engine.delay = 0.6
    per_job: list[int] = []
    counted = jobs.preannotate_pending

    def drain(pk):
        before = len(engine.calls)
        try:
            return counted(pk)
        finally:
            per_job.append(len(engine.calls) - before)

    monkeypatch.setattr(jobs, "preannotate_pending", drain)
    project = ocr_project("drain chain")
    with override_settings(MARKER_LS={**django_settings.MARKER_LS, "QUEUE_BACKEND": "embedded",
                                      "PREANNOTATE_BATCH_SIZE": 4, "INFERENCE_TIMEOUT": 1}):
        with transaction.atomic():
            tasks = [import_page(project, f"c{i}") for i in range(12)]
        wait_for(lambda: predicted(tasks) == 12, 60, message="every task to be predicted")
        get_embedded_executor(get_config()["INFERENCE_QUEUE"]).submit(lambda: None).result(60)
    assert engine.calls == [4, 4, 4] and max(per_job) == 1, (engine.calls, per_job)


def pending_read(sql: str) -> bool:
    """Whether ``sql`` is the drain job's read of its project's pending tasks (preannotation.pending_batches)."""
    frame = sys._getframe()
    while frame is not None and frame.f_code is not preannotation.pending_batches.__code__:
        frame = frame.f_back
    return frame is not None and TaskOCR._meta.db_table in sql


@pytest.mark.parametrize("moment", ["before its first read", "after its last read"])
def test_a_task_committed_while_the_drain_job_runs_is_predicted(embedded, monkeypatch, moment):
    """Another request commits a task right before the drain job's first read of the pending tasks, or right after
    its last one (the job found nothing more and is ending): the task is predicted either way, by this job or by the
    one the commit queued. The job marks itself started before its first read; marked after its last, the task
    would wait forever."""
    engine, drains = embedded
    engine.gate.set()
    project = ocr_project(f"race {moment}")
    late: list[Task] = []
    reads: list[str] = []

    def commit_late():
        def request():
            try:
                late.append(import_page(project, "late"))
            finally:
                connection.close()

        thread = threading.Thread(target=request)
        thread.start()
        thread.join(60)

    def hook(execute, sql, params, many, context):
        reading = pending_read(sql)
        if reading:
            reads.append(sql)
        if reading and moment == "before its first read" and len(reads) == 1:
            commit_late()
        result = execute(sql, params, many, context)
        if reading and moment == "after its last read" and len(reads) == 2:  # [first], then nothing
            commit_late()
        return result

    counted = jobs.preannotate_pending

    def drain(pk):
        with connection.execute_wrapper(hook):
            return counted(pk)

    monkeypatch.setattr(jobs, "preannotate_pending", drain)
    first = import_page(project, "first")
    wait_for(lambda: late and predicted([first, *late]) == 2, 60, message="the late task to be predicted")
    assert len(drains) == 2  # the late commit queued a job of its own: the running one was started


def test_with_rq_one_drain_job_waits_for_many_small_imports_and_a_worker_predicts_them(redis_url, tmp_path):
    from django_rq import get_queue

    queue = get_queue(get_config()["INFERENCE_QUEUE"])
    queue.empty()
    project = ocr_project("many small imports rq")
    tasks = [import_page(project, f"rq{i}") for i in range(12)]
    jobs_queued = [queue.fetch_job(job_id) for job_id in queue.get_job_ids()]
    assert [(job.func_name, job.args, job.timeout) for job in jobs_queued] == [
        (preannotation.DRAIN_JOB, (project.pk,), get_config()["INFERENCE_TIMEOUT"])]

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "django", "rqworker", queue.name, "--burst"],
                              env=dict(os.environ), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        worker.wait(300)
    finally:
        stop_process(worker)
        log.close()
    assert predicted(tasks) == 12, (tmp_path / "worker.log").read_text()[-3000:]
    assert {p.model_version for p in Prediction.objects.filter(task__in=tasks)} == {"marker-rapidocr-base"}
