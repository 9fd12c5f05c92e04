"""Registration in Label Studio's settings, the configuration reader, and quiet defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from django.conf import settings
from django.test import override_settings
from django.urls import resolve

from marker_ls_plugin.conf import DEFAULTS, get_config, queue_backend


def test_the_app_and_django_rq_are_installed_after_label_studio_apps():
    apps = settings.INSTALLED_APPS
    assert "marker_ls_plugin" in apps and "django_rq" in apps
    assert apps.index("projects") < apps.index("marker_ls_plugin")
    assert settings.ROOT_URLCONF == "marker_ls_plugin.wiring.urls"


def test_plugin_routes_resolve_before_label_studio_and_label_studio_routes_remain():
    assert resolve("/marker-ls/api/runs/5/").func.view_class.__name__ == "RunAPI"
    assert resolve("/marker-ls/health/").func.__name__ == "not_found"
    assert resolve("/health/").url_name == "health"
    assert resolve("/api/projects/").url_name is not None


def test_queues_follow_the_redis_url():
    config = get_config()
    assert config["REDIS_URL"] == os.environ["MARKER_LS_REDIS_URL"]
    for queue in (config["TRAINING_QUEUE"], config["INFERENCE_QUEUE"]):
        # With timeouts on every Redis call: a Redis that hangs must not hang requests (tests/domain/test_runs.py).
        assert settings.RQ_QUEUES[queue]["URL"] == f"{config['REDIS_URL']}?socket_connect_timeout=5&socket_timeout=5"
    assert queue_backend() == "rq"


def test_redis_timeouts_set_in_the_url_win():
    from marker_ls_plugin.settings import _with_redis_timeouts

    assert _with_redis_timeouts("redis://:pw@host:6380/2?socket_timeout=30") == \
        "redis://:pw@host:6380/2?socket_timeout=30&socket_connect_timeout=5"
    assert _with_redis_timeouts("unix:///run/redis.sock?db=1") == \
        "unix:///run/redis.sock?db=1&socket_connect_timeout=5&socket_timeout=5"


def test_defaults_merge_with_user_settings_and_cache_clears():
    with override_settings(MARKER_LS={"REDIS_URL": None, "HEARTBEAT_TIMEOUT": 99}):
        config = get_config()
        assert config["HEARTBEAT_TIMEOUT"] == 99 and config["TRAINING_QUEUE"] == DEFAULTS["TRAINING_QUEUE"]
        assert queue_backend() == "embedded"
        assert config["MODELS_DIR"] == os.path.join(settings.BASE_DATA_DIR, "marker_ls", "models")
    assert get_config()["HEARTBEAT_TIMEOUT"] == int(os.environ["MARKER_LS_HEARTBEAT_TIMEOUT"])
    with override_settings(MARKER_LS={"QUEUE_BACKEND": "rq"}):
        assert queue_backend() == "rq"


def test_quiet_by_default():
    assert not settings.SENTRY_DSN and not settings.FRONTEND_SENTRY_DSN
    assert settings.LATEST_VERSION_CHECK is False
    assert settings.COLLECT_ANALYTICS is False


def _settings_value(expression: str, **env: str) -> str:
    code = ("import django; django.setup(); from django.conf import settings; "
            f"import sys; print(repr({expression}))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_users_can_opt_back_in_to_error_reporting():
    assert _settings_value("settings.SENTRY_DSN", LABEL_STUDIO_SENTRY_DSN="https://k@sentry.example/1") == (
        "'https://k@sentry.example/1'")


ENV_READ = re.compile(r"(?:os\.getenv|os\.environ\.get)\(([^,)]*)|os\.environ\[([^\]]+)\](?!\s*=)")
# The exceptions: the remote export runs on any machine without Django settings, and takes Label Studio's API
# key from the variable the Label Studio SDK and CLI tools use; conf.env_value is the one reader of the
# MARKER_LS_* variables, which the settings module builds MARKER_LS with and the standalone ML backend (no Django
# settings) reads its engine cache size with.
OUTSIDE_SETTINGS = {("dataset/export.py", '"LABEL_STUDIO_API_KEY"'), ("conf.py", 'f"MARKER_LS_{key}"')}


def test_environment_is_read_only_by_the_settings_module():
    assert _settings_value("settings.MARKER_LS['HEARTBEAT_TIMEOUT']", MARKER_LS_HEARTBEAT_TIMEOUT="321") == "321"
    package = os.path.dirname(__import__("marker_ls_plugin").__file__)
    offenders = []
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or name == "settings.py":
                continue
            relative = os.path.relpath(path, package)
            for match in ENV_READ.finditer(open(path).read()):
                key = (match.group(1) or match.group(2) or "").strip()
                if (relative, key) not in OUTSIDE_SETTINGS:
                    offenders.append(f"{relative}: {match.group(0)}")
    assert offenders == []


def test_importing_the_plugin_never_imports_torch():
    code = (
        "import sys, django; django.setup()\n"
        "import marker_ls_plugin, marker_ls_plugin.web.admin, marker_ls_plugin.web.pages, marker_ls_plugin.web.api,"
        " marker_ls_plugin.domain.runs,"
        " marker_ls_plugin.jobs, marker_ls_plugin.cli, marker_ls_plugin.wiring.urls, marker_ls_plugin.wiring.checks\n"
        "from django.core.management import call_command; call_command('check')\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_the_running_server_has_not_loaded_torch(label_studio, http):
    http.get(f"{label_studio.url}/marker-ls/", timeout=30)
    maps = open(f"/proc/{label_studio.proc.pid}/maps").read()
    assert "libtorch" not in maps
