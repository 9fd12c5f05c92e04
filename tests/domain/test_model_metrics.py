"""One accessor for a model's headline metrics (OCRModel.headline_metrics): runs store {"before", "after"},
models brought by hand may carry flat keys; the admin, the CLI, the dashboard and the run page all read it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from mls_browser import logged_in
from mls_factories import make_project, make_user
from mls_helpers import ROOT

from marker_ls_plugin.models import FineTuneRun, OCRModel

RUN_METRICS = {"before": {"cer": 0.3117, "wer": 0.6, "exact": 0.1, "lines": 40},
               "after": {"cer": 0.1234, "wer": 0.3, "exact": 0.5, "lines": 40}, "worst_lines": []}


@pytest.mark.parametrize("metrics, expected", [
    (RUN_METRICS, {"cer": 0.1234, "wer": 0.3, "exact": 0.5, "lines": 40}),
    ({"cer": 0.05, "wer": 0.1}, {"cer": 0.05, "wer": 0.1}),
    ({"before": {"cer": 0.3}}, {}),
    ({"after": {"cer": "low", "wer": True, "exact": float("nan")}}, {}),
    ({}, {}),
    ([], {}),
])
def test_headline_metrics(metrics, expected):
    assert OCRModel(metrics=metrics).headline_metrics == expected


def test_cer_text():
    assert OCRModel(metrics=RUN_METRICS).cer_text == "12.34%"
    assert OCRModel(metrics={"cer": 0.5}).cer_text == "50.00%"
    assert OCRModel(metrics={}).cer_text == "-"


@pytest.fixture(scope="module")
def models():
    owner = make_user()
    project = make_project("headline metrics", owner)
    run = FineTuneRun.objects.create(project=project, status="succeeded", started_by=owner)
    tag = uuid.uuid4().hex[:8]
    tuned = OCRModel.objects.create(name=f"headline-tuned-{tag}", kind="finetuned", produced_by_run=run,
                                    organization=owner.active_organization, metrics=RUN_METRICS,
                                    checkpoint=f"/srv/headline-{tag}")
    flat = OCRModel.objects.create(name=f"headline-flat-{tag}", metrics={"cer": 0.0456}, engine="rapidocr")
    return {"owner": owner, "run": run, "tuned": tuned, "flat": flat}


def admin_row(html: str, name: str) -> str:
    start = html.index(f">{name}</a>")
    return html[start:html.index("</tr>", start)]


def test_admin_changelist_shows_the_cer_of_fine_tuned_and_flat_models(models):
    from users.models import User

    superuser = User.objects.create_superuser(email=f"root-{uuid.uuid4().hex[:8]}@example.com", password="pw")
    superuser.active_organization = models["owner"].active_organization
    superuser.save()
    html = logged_in(superuser).get("/admin/marker_ls_plugin/ocrmodel/").content.decode()
    assert "12.34%" in admin_row(html, models["tuned"].name)
    assert "4.56%" in admin_row(html, models["flat"].name)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marker_ls_plugin.cli", *args], env=dict(os.environ), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_models_list_shows_the_cer_and_filters_by_organization(models):
    organization = models["owner"].active_organization_id
    listing = cli("models", "list", "--organization", str(organization))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    [tuned] = [line for line in lines if f" {models['tuned'].name} " in line]
    [flat] = [line for line in lines if f" {models['flat'].name} " in line]
    assert "CER 12.34%" in tuned and f"org {organization}" in tuned
    assert "CER 4.56%" in flat and "instance" in flat
    # another organization sees the instance-wide model, not this one's
    other = cli("models", "list", "--organization", str(make_user().active_organization_id)).stdout
    assert models["flat"].name in other and models["tuned"].name not in other
    missing = cli("models", "list", "--organization", "999999999")
    assert missing.returncode == 2 and "No organization 999999999" in missing.stderr


def test_dashboard_and_run_page_read_the_same_headline(models):
    client = logged_in(models["owner"])
    dashboard = client.get("/marker-ls/").content.decode()
    dashboard = dashboard[dashboard.index('id="mls-models"'):]
    start = dashboard.index(f"<td>{models['tuned'].name}</td>")
    assert "0.3117 &rarr; 0.1234" in dashboard[start:dashboard.index("</tr>", start)]
    start = dashboard.index(f"<td>{models['flat'].name}</td>")
    row = dashboard[start:dashboard.index("</tr>", start)]
    assert "0.0456" in row and "&rarr;" not in row
    page = client.get(f"/marker-ls/runs/{models['run'].pk}/").content.decode()
    assert "<th>All lines</th><td>40</td><td>0.3117</td><td>0.1234</td>" in page
