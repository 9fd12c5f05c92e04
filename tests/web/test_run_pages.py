"""The run page's result section and its Activate and Retry buttons, calling the views with a request.

(The end-to-end test drives the same pages over HTTP on a real server; Label Studio's signed-cookie sessions
make Django's test client log-in unusable here.)"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.middleware.csrf import get_token
from django.test import RequestFactory
from mls_browser import logged_in
from mls_factories import make_project, make_user

from marker_ls_plugin.domain import runs
from marker_ls_plugin.models import FineTuneRun, OCRModel
from marker_ls_plugin.training.config import TrainingArguments
from marker_ls_plugin.web import pages

METRICS = {
    "base_checkpoint": "/models/base", "steps": 120, "best_step": 90, "device": "cpu", "seconds": 61.5,
    "before": {"cer": 0.31, "wer": 0.6, "exact": 0.1, "lines": 40,
               "per_label": {"Text": {"cer": 0.25, "wer": 0.5, "exact": 0.2, "lines": 30},
                             "Handwriting": {"cer": 0.5, "wer": 0.9, "exact": 0.0, "lines": 10}}},
    "after": {"cer": 0.12, "wer": 0.3, "exact": 0.45, "lines": 40,
              "per_label": {"Text": {"cer": 0.08, "wer": 0.2, "exact": 0.6, "lines": 30},
                            "Handwriting": {"cer": 0.24, "wer": 0.6, "exact": 0.0, "lines": 10}}},
    "worst_lines": [{"key": "7:r2", "label": "Handwriting", "reference": "Grandma's <recipe> & notes",
                     "before": "Grandmas recipe", "after": "Grandma's recipe", "cer_before": 0.4, "cer_after": 0.3}],
}


def finished_run(status: str, owner, *, with_model: bool) -> FineTuneRun:
    project = make_project(f"run page {status}", owner)
    run = FineTuneRun.objects.create(project=project, status=status, config={"max_steps": 120}, started_by=owner)
    if with_model:
        OCRModel.objects.create(name=f"page-model-{run.pk}", kind="finetuned", engine="surya",
                                checkpoint=f"/models/recognition/page-model-{run.pk}", produced_by_run=run,
                                metrics=METRICS)
    return run


class Browser:
    """GET and POST to the plugin's page views as ``user``."""

    def __init__(self, user):
        self.user, self.factory = user, RequestFactory()

    def get(self, view, pk: int):
        request = self.factory.get("/")
        request.user = self.user
        return view(request, pk)

    def post(self, view, pk: int):
        request = self.factory.post("/")
        request.user = self.user
        # What a browser sends from the page's form: the CSRF cookie, and the token that matches it.
        page = self.factory.get("/")
        request.META["HTTP_X_CSRFTOKEN"] = get_token(page)
        request.COOKIES[settings.CSRF_COOKIE_NAME] = page.META["CSRF_COOKIE"]
        try:
            return view(request, pk)
        except Http404:
            return type("NotFound", (), {"status_code": 404})()


def page(user, run) -> str:
    return Browser(user).get(pages.run_detail, run.pk).content.decode()


def test_result_section_compares_before_and_after_and_activates():
    owner = make_user()
    run = finished_run("succeeded", owner, with_model=True)
    html = page(owner, run)
    assert f"Result: page-model-{run.pk}" in html and "best at step 90" in html
    assert "<th>All lines</th><td>40</td><td>0.31</td><td>0.12</td>" in html
    assert "<th>Handwriting</th><td>10</td><td>0.5</td><td>0.24</td>" in html
    assert "Grandma&#x27;s &lt;recipe&gt; &amp; notes" in html  # annotators' text is escaped
    assert "Retry with the same settings" not in html
    assert "Active for this project." not in html and "Activate for" in html

    response = Browser(owner).post(pages.run_activate_page, run.pk)
    assert response.status_code == 302
    assert runs.active_model_for(run.project).name == f"page-model-{run.pk}"
    assert "Active for this project." in page(owner, run)


def test_retry_button_starts_a_run_with_the_same_settings():
    owner = make_user()
    run = finished_run("failed", owner, with_model=False)
    FineTuneRun.objects.filter(pk=run.pk).update(retryable=True, error="worker stopped: no heartbeat")
    browser = Browser(owner)
    assert "Retry with the same settings" in page(owner, run)
    response = browser.post(pages.run_retry_page, run.pk)
    retry = FineTuneRun.objects.exclude(pk=run.pk).get(project=run.project)
    assert response.status_code == 302 and response["Location"] == f"/marker-ls/runs/{retry.pk}/"
    assert retry.config == TrainingArguments(max_steps=120).to_dict() and retry.trigger == run.trigger
    assert f'Retried as <a href="/marker-ls/runs/{retry.pk}/">run #{retry.pk}</a> (queued)' in page(owner, run)
    assert f'Retry of <a href="/marker-ls/runs/{run.pk}/">run #{run.pk}</a>' in page(owner, retry)
    runs.cancel_run(retry)
    # a succeeded run, or one that failed for its own reasons, is not retried
    done = finished_run("succeeded", owner, with_model=False)
    assert browser.post(pages.run_retry_page, done.pk).status_code == 400
    broken = finished_run("failed", owner, with_model=False)
    assert "Retry with the same settings" not in page(owner, broken)
    assert browser.post(pages.run_retry_page, broken.pk).status_code == 400
    # and another organisation cannot touch the run
    assert browser.post(pages.run_activate_page, done.pk).status_code == 400
    stranger = Browser(make_user())
    assert stranger.post(pages.run_retry_page, run.pk).status_code == 404
    assert stranger.post(pages.run_activate_page, run.pk).status_code == 404


def test_the_error_comes_first_in_one_line_and_the_traceback_folded():
    owner = make_user()
    run = finished_run("failed", owner, with_model=False)
    trace = ('Traceback (most recent call last):\n  File "loop.py", line 3, in train\n'
             'RuntimeError: CUDA <out> of memory.')
    FineTuneRun.objects.filter(pk=run.pk).update(error="RuntimeError: CUDA <out> of memory.", traceback=trace,
                                                 log_tail="exporting project")
    html = page(owner, run)
    error = '<p class="mls-error" data-field="error">RuntimeError: CUDA &lt;out&gt; of memory.</p>'
    folded = ('<details class="mls-traceback"><summary>Traceback</summary><pre>Traceback (most recent call last):\n'
              '  File &quot;loop.py&quot;, line 3, in train\nRuntimeError: CUDA &lt;out&gt; of memory.</pre></details>')
    log = '<pre class="mls-log" data-field="log_tail">exporting project</pre>'
    assert error in html and folded in html and log in html
    assert html.index(error) < html.index(folded) < html.index(log)
    assert "<details" not in page(owner, finished_run("succeeded", owner, with_model=False))


def test_cancelling_an_ended_run_says_there_is_nothing_to_cancel():
    owner = make_user()
    run = finished_run("succeeded", owner, with_model=False)
    response = Browser(owner).post(pages.run_cancel_page, run.pk)
    assert response.status_code == 409
    assert f"Run #{run.pk} already succeeded; nothing to cancel" in response.content.decode()
    api = logged_in(owner).post(f"/marker-ls/api/runs/{run.pk}/cancel/", {}, content_type="application/json")
    assert api.status_code == 409 and api.json() == {"detail": f"Run #{run.pk} already succeeded; nothing to cancel"}
    run.refresh_from_db()
    assert run.status == "succeeded" and not run.cancel_requested
    # an active run is still cancelled from its page
    queued = FineTuneRun.objects.create(project=run.project, config={}, started_by=owner)
    assert Browser(owner).post(pages.run_cancel_page, queued.pk).status_code == 302
    queued.refresh_from_db()
    assert queued.status == "cancelled"
