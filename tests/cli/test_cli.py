"""`marker-ls`: documented subcommands, and a first start on a fresh machine with no network."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from mls_helpers import CI, ROOT, TESTS, free_port
from mls_helpers import clean_environ as _clean_environ

from marker_ls_plugin.cli import build_parser

SUBCOMMANDS = {"start", "worker", "check", "reap", "project", "preannotate", "ml-backend", "export", "models"}


def marker_ls(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "marker_ls_plugin.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ))


def test_help_documents_every_subcommand():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(choices) == SUBCOMMANDS
    top = marker_ls("--help")
    assert top.returncode == 0
    for name in SUBCOMMANDS:
        assert name in top.stdout
        sub = marker_ls(name, "--help")
        assert sub.returncode == 0 and len(sub.stdout) > 100, name
    assert "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN" in marker_ls("start", "--help").stdout


def test_worker_without_redis_explains_itself():
    env = {k: v for k, v in os.environ.items() if k != "MARKER_LS_REDIS_URL"}
    result = marker_ls("worker", "--burst", env=env)
    assert result.returncode == 2 and "needs Redis" in result.stderr


@pytest.fixture
def offline_capable():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if CI:
            pytest.fail("this test needs root and unshare(1) to cut the network")
        pytest.skip("needs root and unshare(1)")


def test_first_start_works_offline_on_a_fresh_sqlite_install(tmp_path, offline_capable):
    """No network, no Redis, no PostgreSQL: migrations, a generated admin, and the plugin page."""
    env = _clean_environ()
    env["DJANGO_DB"] = "sqlite"
    data_dir = tmp_path / "data"
    script = TESTS / "mls_offline_start.py"
    command = f"ip link set lo up && exec {sys.executable} {script} {data_dir} {free_port()}"
    result = subprocess.run(["unshare", "--net", "sh", "-c", command], env=env, capture_output=True, text=True,
                            timeout=400, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["password_printed"], seen["log"]
    assert seen["logged_in"] and seen["dashboard"] == 200 and seen["file_mode"] == "0o600"
    # In front of an OCR project from the preset, its sample pages pre-annotated, saying which engine and why.
    [(title, description)] = seen["projects"]
    assert title == "Marker OCR demo" and "rapidocr" in description and "surya's weights are not" in description
    assert seen["demo_tasks"] == 3 and seen["demo_predicted"] == 3
    assert "Invoice 2026-0117" in seen["demo_texts"]
    assert "pre-annotating with rapidocr" in seen["log"]
    # The plugin's migrations applied on SQLite.
    with sqlite3.connect(data_dir / "label_studio.sqlite3") as db:
        applied = {row[0] for row in db.execute("SELECT name FROM django_migrations WHERE app='marker_ls_plugin'")}
    assert "0001_initial" in applied
