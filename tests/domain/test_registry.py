"""Checkpoint directories placed under <models dir>/recognition/ join the registry; broken ones are reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from mls_factories import make_project
from mls_helpers import ROOT, wait_for

from marker_ls_plugin.domain.registry import InvalidCheckpoint, register_model_dir, scan_models_dir
from marker_ls_plugin.models import FineTuneRun, OCRModel


@pytest.fixture
def tiny(tiny_surya) -> Path:
    """The session's tiny recognition checkpoint: shared, so tests place hard-linked copies of it."""
    return tiny_surya["recognition"]


@pytest.fixture
def models_dir(tmp_path) -> Path:
    (tmp_path / "models" / "recognition").mkdir(parents=True)
    return tmp_path / "models"


def place(tiny: Path, models_dir: Path, name: str, metadata: dict | None = None) -> Path:
    """A copy of the tiny checkpoint (hard links: break a file by replacing it, never in place)."""
    target = models_dir / "recognition" / name
    shutil.copytree(tiny, target, copy_function=os.link)
    if metadata is not None:
        (target / "marker_ls_model.json").write_text(json.dumps(metadata))
    return target


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def broken_dirs(tiny: Path, models_dir: Path) -> dict[str, Path]:
    dirs = {name: place(tiny, models_dir, name) for name in
            ("reg-no-config", "reg-wrong-type", "reg-no-weights", "reg-truncated", "reg-no-tokenizer")}
    (dirs["reg-no-config"] / "config.json").unlink()
    config = json.loads((tiny / "config.json").read_text())
    replace(dirs["reg-wrong-type"] / "config.json", json.dumps({**config, "model_type": "efficientvit"}).encode())
    (dirs["reg-no-weights"] / "model.safetensors").unlink()
    replace(dirs["reg-truncated"] / "model.safetensors", (tiny / "model.safetensors").read_bytes()[:1_000_000])
    (dirs["reg-no-tokenizer"] / "specials_dict.json").unlink()
    return dirs


def test_scan_registers_valid_dirs_once_and_reports_broken_ones(tiny, models_dir):
    good = place(tiny, models_dir, "Reg Base Model")
    place(tiny, models_dir, ".tmp-reg-in-progress")  # a training job's directory before its rename
    (models_dir / "recognition" / "notes.txt").write_text("not a model")
    dirs = broken_dirs(tiny, models_dir)

    report = scan_models_dir(models_dir)
    [entry] = report.registered
    model = entry.model
    assert (model.name, model.kind, model.engine) == ("reg-base-model", "base", "surya")
    assert model.checkpoint == str(good) and os.path.isabs(model.checkpoint)
    reasons = {entry.path.name: entry.reason for entry in report.broken}
    assert set(reasons) == set(dirs)
    assert reasons["reg-no-config"] == "config.json is missing"
    assert "model_type 'efficientvit'" in reasons["reg-wrong-type"]
    assert reasons["reg-no-weights"] == "no weights: neither *.safetensors nor pytorch_model.bin"
    assert reasons["reg-truncated"].startswith("model.safetensors is unreadable: ")
    assert reasons["reg-no-tokenizer"] == "tokenizer file(s) missing: specials_dict.json"
    assert not OCRModel.objects.filter(checkpoint__in=[str(path) for path in dirs.values()]).exists()
    assert not OCRModel.objects.filter(checkpoint__contains=".tmp-reg").exists()

    again = scan_models_dir(models_dir)
    assert again.registered == [] and [entry.model for entry in again.known] == [model]
    assert len(again.broken) == 5
    assert OCRModel.objects.filter(checkpoint=str(good)).count() == 1


def test_metadata_of_a_fine_tune_run_fills_the_row(tiny, models_dir):
    parent = OCRModel.objects.create(name="reg-parent", checkpoint="vikp/some-hub-id")
    run = FineTuneRun.objects.create(project=make_project("registry metadata"), status="succeeded")
    metadata = {"name": "Reg Finetuned", "parent": "reg-parent", "run": run.pk, "dataset_sha256": "ab" * 32,
                "metrics": {"cer": 0.042}, "description": "two epochs on invoices"}
    path = place(tiny, models_dir, "reg-run-output", metadata)

    [entry] = scan_models_dir(models_dir).registered
    model = OCRModel.objects.get(pk=entry.model.pk)
    assert (model.name, model.kind, model.checkpoint) == ("reg-finetuned", "finetuned", str(path))
    assert model.parent == parent and model.produced_by_run == run
    assert model.dataset_sha256 == "ab" * 32 and model.metrics == {"cer": 0.042}
    assert model.description == "two epochs on invoices"


def test_a_dir_its_run_registered_is_not_duplicated(tiny, models_dir):
    run = FineTuneRun.objects.create(project=make_project("registry run registered"), status="succeeded")
    by_run = OCRModel.objects.create(name="reg-by-run", kind="finetuned", produced_by_run=run,
                                     checkpoint="/elsewhere/reg-by-run")
    place(tiny, models_dir, "reg-by-run-dir", {"name": "reg-by-run", "run": run.pk})
    # A fine-tuned model with a blank checkpoint lives at <MODELS_DIR>/recognition/<name>/.
    implicit = OCRModel.objects.create(name="reg-implicit", kind="finetuned")
    place(tiny, models_dir, "reg-implicit")

    with override_settings(MARKER_LS={**settings.MARKER_LS, "MODELS_DIR": str(models_dir)}):
        report = scan_models_dir()
    assert report.registered == [] and report.broken == []
    assert {entry.model for entry in report.known} == {by_run, implicit}


def test_names_are_slugs_made_unique(tiny, models_dir):
    taken = OCRModel.objects.create(name="reg-taken", checkpoint="vikp/reg-taken")
    path = place(tiny, models_dir, "Reg Taken")
    place(tiny, models_dir, "reg taken!")
    names = [entry.model.name for entry in scan_models_dir(models_dir).registered]
    assert names == ["reg-taken-2", "reg-taken-3"]
    assert taken.checkpoint == "vikp/reg-taken"
    model, created = register_model_dir(path)  # the training job's entry point: idempotent
    assert not created and model.checkpoint == str(path)


def test_malformed_metadata_is_reported_not_registered(tiny, models_dir):
    path = place(tiny, models_dir, "reg-bad-metadata")
    (path / "marker_ls_model.json").write_text("{not json")
    with pytest.raises(InvalidCheckpoint, match="marker_ls_model.json is not readable JSON"):
        register_model_dir(path)
    (path / "marker_ls_model.json").write_text(json.dumps({"name": "x", "metrics": [1, 2]}))
    [entry] = scan_models_dir(models_dir).broken
    assert entry.reason == "marker_ls_model.json: 'metrics' has the wrong type (list)"


def test_a_missing_models_dir_is_an_empty_report(tmp_path):
    report = scan_models_dir(tmp_path / "nowhere")
    assert report.entries == [] and "0 registered" in report.summary()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marker_ls_plugin.cli", *args], env=dict(os.environ), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_scan_and_list(tiny, models_dir):
    good = place(tiny, models_dir, "reg-cli-good")
    result = cli("models", "scan", "--models-dir", str(models_dir))
    assert result.returncode == 0, result.stderr
    assert f"models: registered  reg-cli-good ({good})" in result.stdout
    assert "1 registered, 0 already known, 0 broken" in result.stdout

    (place(tiny, models_dir, "reg-cli-broken") / "vocab_math.json").unlink()
    result = cli("models", "scan", "--models-dir", str(models_dir))
    assert result.returncode == 1
    assert f"models: known       reg-cli-good ({good})" in result.stdout
    assert "reg-cli-broken: tokenizer file(s) missing: vocab_math.json" in result.stderr

    listing = cli("models", "list")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if " reg-cli-good " in line]
    assert "base" in line and "surya" in line and str(good) in line


def test_worker_scans_at_start(tiny, models_dir, start_worker, monkeypatch):
    place(tiny, models_dir, "reg-worker-model")
    monkeypatch.setenv("MARKER_LS_MODELS_DIR", str(models_dir))
    worker = start_worker("--burst")
    worker.wait(120)
    log = Path(worker.log_path).read_text()
    assert "models: registered  reg-worker-model" in log, log[-3000:]
    wait_for(lambda: OCRModel.objects.filter(name="reg-worker-model").exists(), 10, message="the model row")
