"""System checks report misconfiguration with stable ids and a hint."""

from __future__ import annotations

import os
import subprocess
import sys

from django.test import override_settings
from mls_helpers import free_port

from marker_ls_plugin.wiring.checks import check_configuration, check_surya


def ids(messages):
    return sorted(message.id for message in messages)


def test_a_good_configuration_passes(tmp_path):
    with override_settings(MARKER_LS={"REDIS_URL": os.environ["MARKER_LS_REDIS_URL"], "MODELS_DIR": str(tmp_path)}):
        assert check_configuration() == []


def test_unreachable_redis_is_an_error():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(MARKER_LS={"REDIS_URL": url}):
        [message] = check_configuration()
    assert message.id == "marker_ls.E002" and url in message.msg and "embedded" in message.hint


def test_rq_without_a_redis_url_is_an_error():
    with override_settings(MARKER_LS={"QUEUE_BACKEND": "rq", "REDIS_URL": None}):
        assert ids(check_configuration()) == ["marker_ls.E002"]


def test_models_dir_not_writable_is_an_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with override_settings(MARKER_LS={"REDIS_URL": None, "MODELS_DIR": str(blocker / "models")}):
        [message] = check_configuration()
    assert message.id == "marker_ls.E003" and "MARKER_LS_MODELS_DIR" in message.hint


def test_unknown_keys_bad_backend_and_heartbeat_are_reported(tmp_path):
    settings = {"REDIS_URL": None, "MODELS_DIR": str(tmp_path), "QUEUE_BACKEND": "celery", "REDIS": "x",
                "HEARTBEAT_INTERVAL": 10, "HEARTBEAT_TIMEOUT": 15}
    with override_settings(MARKER_LS=settings):
        assert ids(check_configuration()) == ["marker_ls.E001", "marker_ls.E004", "marker_ls.W001"]


def test_surya_0_17_1_is_installed():
    assert check_surya() == []


def test_marker_ls_check_fails_on_unreachable_redis():
    env = {**os.environ, "MARKER_LS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run([sys.executable, "-m", "marker_ls_plugin.cli", "check"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "marker_ls.E002" in result.stderr and "unreachable" in result.stderr
