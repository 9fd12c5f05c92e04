"""The package's declared dependencies are what it imports, and an install without extras can fine-tune.

The install test does what docker/label-studio/Dockerfile does (no extras; surya-ocr with --no-deps), into a
fresh virtual environment without the system's or this environment's packages, then trains a tiny
real-architecture surya model with the package's training loop and scores it (jiwer). It installs from pip's
cache and the configured index; torch is pinned first, as the Makefile does, so that no other build resolves.
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

ROOT = Path(__file__).resolve().parent.parent
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


TRAIN_SCRIPT = """
import json, sys, tempfile
from pathlib import Path

import marker_ls_plugin
assert marker_ls_plugin.__file__.startswith(sys.prefix), marker_ls_plugin.__file__  # the installed copy

import surya_tiny
from mls_lines import TEXTS, render_line

import marker_ls_plugin.finetune  # the run function's module and what it imports at load
from marker_ls_plugin.training import loop
from marker_ls_plugin.training.config import TrainingArguments

root = Path(tempfile.mkdtemp())
checkpoint = str(surya_tiny.build_tiny_recognition(root / "recognition"))
lines = [loop.Line(render_line(text), text, "Text", str(i)) for i, text in enumerate(TEXTS)]
arguments = TrainingArguments(max_steps=2, per_device_train_batch_size=4, eval_steps=2, freeze=[],
                              mixed_precision="no", seed=0)
result = loop.train(checkpoint, lines, lines[:2], arguments, root / "out", None, device="cpu")
print(json.dumps({"steps": result.steps, "cer": result.after.metrics["cer"], "wer": result.after.metrics["wer"],
                  "saved": sorted(p.name for p in (root / "out").iterdir())}))
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
def test_install_without_extras_fine_tunes_a_tiny_model(tmp_path):
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

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(ROOT / "tests")  # the tiny-model builder and line renderer only
    out = _run([python, "-c", TRAIN_SCRIPT], timings, "fine-tune", cwd=tmp_path, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["steps"] == 2 and 0 <= result["cer"] and result["wer"] >= 0
    assert {"config.json", "model.safetensors", "marker_ls_model.json"} <= set(result["saved"])
    print(f"clean install and tiny fine-tune, seconds per step: {timings}")
