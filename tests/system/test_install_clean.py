"""The package's declared dependencies are what it imports, and an install without extras can fine-tune.

The install test does what docker/label-studio/Dockerfile does (no extras; surya-ocr with --no-deps), into a
fresh virtual environment without the system's or this environment's packages, then runs the fine-tune job
(export, training, jiwer scores, save, registration, activation) on a tiny real-architecture surya model.
It installs from pip's cache and the configured index; torch is pinned first, as the Makefile does, so that no
other build resolves.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mls_helpers import ROOT

PACKAGE = ROOT / "marker_ls_plugin"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
# Imported by the package but deliberately not in install_requires, and why.
NOT_REQUIRED = {
    "surya-ocr": "installed with --no-deps: its Pillow/opencv pins contradict Label Studio's (README, Installation)",
    "datasets": "only dataset.export.load_hf_dataset, the 'hf' extra",
}


def _declared(keyword: str) -> object:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == keyword))


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Top-level module -> files importing it, lazy imports inside functions included."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_distribution_is_a_runtime_dependency():
    import importlib.metadata

    import label_studio

    # Label Studio's Django apps (core, projects, tasks, ...) are top-level modules inside its own distribution.
    label_studio_apps = {p.name for p in Path(label_studio.__file__).parent.iterdir() if p.is_dir()}
    distributions = importlib.metadata.packages_distributions()
    required = {_name(r) for r in _declared("install_requires")}
    missing = {}
    for module, files in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module == "marker_ls_plugin" or module in label_studio_apps:
            continue
        names = {_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} (imported by {sorted(files)}) is not installed here"
        if not names & (required | set(NOT_REQUIRED)):
            missing[module] = sorted(files)
    assert not missing, f"imported but not in install_requires: {missing}"
    assert "datasets" in _declared("extras_require")["hf"]


# The fine-tune job itself (jobs.execute_run -> finetune.run_finetune: export, train, evaluate with jiwer, save,
# register, activate), on a migrated PostgreSQL clone, in the clean environment.
JOB_SCRIPT = """
import json, sys, tempfile
from pathlib import Path

import marker_ls_plugin
assert marker_ls_plugin.__file__.startswith(sys.prefix), marker_ls_plugin.__file__  # the installed copy

import django
django.setup()
from mls_factories import ocr_project, page_task

from marker_ls_plugin.jobs import execute_run
from marker_ls_plugin.models import FineTuneRun
from marker_ls_plugin.domain.runs import active_model_for
from marker_ls_plugin.training.config import TrainingArguments

project = ocr_project("clean install")
for i in range(3):
    page_task(project, name=f"page{i}.png")
arguments = TrainingArguments.from_dict({"max_steps": 2, "per_device_train_batch_size": 2, "val_fraction": 0.5,
                                         "freeze": [], "mixed_precision": "no", "eval_steps": 2})
run = FineTuneRun.objects.create(project=project, config=arguments.to_dict(), queue_backend="rq", job_id="clean-1")
status = execute_run(run.pk)
run.refresh_from_db()
model = run.result_model
print(json.dumps({"status": status, "error": run.error, "step": run.step, "model": model.name,
                  "after": model.headline_metrics, "active": active_model_for(project) == model,
                  "log": run.log_tail[-600:],
                  "saved": sorted(p.name for p in Path(model.checkpoint or "").iterdir()) if model.checkpoint else []}))
"""


def _run(command: list[str], timings: dict[str, float] | None = None, step: str = "", **kwargs
         ) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if timings is not None:
        timings[step] = round(time.monotonic() - started, 1)
    return done


@pytest.mark.timeout(1200)
def test_install_without_extras_runs_the_fine_tune_job(tmp_path, clone_database):
    timings: dict[str, float] = {}
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timings, "venv")  # no --system-site-packages
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
    _run([*pip, "-c", str(CONSTRAINTS), "torch==2.13.0"], timings, "torch")  # first: the CPU build resolves
    _run([*pip, "-c", str(CONSTRAINTS), str(ROOT)], timings, "package")  # as the Dockerfile: no extras
    _run([*pip, "--no-deps", "surya-ocr==0.17.1"], timings, "surya")
    installed = _run([python, "-m", "pip", "list", "--format=json"]).stdout
    assert not {p["name"].lower() for p in json.loads(installed)} & {"pytest", "ruff", "datasets", "playwright"}

    import surya_tiny

    checkpoint = surya_tiny.build_tiny_recognition(tmp_path / "tiny" / "recognition")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MARKER_LS_"))}
    env.update(clone_database("clean_"))
    env.update({
        "PYTHONPATH": str(ROOT / "tests"),  # the test factories and the page renderer only
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "data"), "MARKER_LS_MODELS_DIR": str(tmp_path / "models"),
        "MARKER_LS_RUN_FUNCTION": "marker_ls_plugin.domain.finetune.run_finetune", "MARKER_LS_TORCH_DEVICE": "cpu",
        "MARKER_LS_SURYA_RECOGNITION_CHECKPOINT": str(checkpoint), "MARKER_LS_ENGINE": "rapidocr",
        "MARKER_LS_ACTIVATION_MARGIN": "-1", "MARKER_LS_REPREDICT_ON_ACTIVATE": "false",
    })
    out = _run([python, "-c", JOB_SCRIPT], timings, "fine-tune job", cwd=tmp_path, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["status"], result["error"], result["step"]) == ("succeeded", "", 2), result
    assert "cer" in result["after"] and result["active"]  # scored with jiwer, registered, activated
    assert {"config.json", "model.safetensors", "marker_ls_model.json"} <= set(result["saved"])
    print(f"clean install and the tiny fine-tune job, seconds per step: {timings}")
