"""Django settings: Label Studio's own settings plus marker-ls-plugin.

Point ``DJANGO_SETTINGS_MODULE`` at this module (``marker-ls start`` does). It is the only
place where the plugin reads environment variables.
"""

import os
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit

import label_studio

# Quiet by default: Label Studio ships live error-reporting DSNs and a start-up version check.
# Its settings read these at import time, so they are defaulted in the environment before the
# import. Setting any of them (or its LABEL_STUDIO_ form) opts back in.
for _name, _value in (
    ("SENTRY_DSN", ""),
    ("FRONTEND_SENTRY_DSN", ""),
    ("LATEST_VERSION_CHECK", "false"),
    ("COLLECT_ANALYTICS", "false"),
):
    os.environ.setdefault(_name, _value)

# Label Studio's apps are top-level packages inside its directory (``tasks``, ``projects``...).
_LS_PATH = os.path.dirname(label_studio.__file__)
if _LS_PATH not in sys.path:
    sys.path.insert(0, _LS_PATH)

# Import base first: Label Studio's leaf module reads django.conf.settings while importing, which
# re-imports this module; pre-seeding it with the base settings breaks that cycle.
from core.settings.base import *  # noqa: E402,F401,F403
from core.settings.label_studio import *  # noqa: E402,F401,F403

from marker_ls_plugin.conf import DEFAULTS, env_value  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "marker_ls_plugin"]  # noqa: F405
if "django_rq" not in INSTALLED_APPS:
    INSTALLED_APPS.append("django_rq")

ROOT_URLCONF = "marker_ls_plugin.wiring.urls"

# Label Studio's own seam for project behaviour: the plugin's mixin extends Label Studio's to hear of
# imported tasks (marker_ls_plugin/wiring/hooks.py).
PROJECT_MIXIN = "marker_ls_plugin.wiring.hooks.ProjectMixin"


MARKER_LS = {key: env_value(key) for key in DEFAULTS}

REDIS_TIMEOUT_SECONDS = 5


def _with_redis_timeouts(url):
    """``url`` with connect and read timeouts unless it sets its own (redis-py reads them from the query).

    A Redis that hangs (accepts, never answers) would otherwise block imports and run starts for ever;
    django-rq passes no other connection options for a URL. RQ workers raise the read timeout of their own
    connection above their blocking dequeue.
    """
    query = urlsplit(url).query
    present = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    extra = urlencode([(name, REDIS_TIMEOUT_SECONDS) for name in ("socket_connect_timeout", "socket_timeout")
                       if name not in present])
    return f"{url}{'&' if query else '?'}{extra}" if extra else url


if MARKER_LS["REDIS_URL"]:
    # Each queue its own timeout: a hung OCR batch must not hold a worker for a fine-tune run's 24 hours.
    for _queue, _timeout in ((MARKER_LS["TRAINING_QUEUE"], MARKER_LS["RUN_TIMEOUT"]),
                             (MARKER_LS["INFERENCE_QUEUE"], MARKER_LS["INFERENCE_TIMEOUT"])):
        RQ_QUEUES[_queue] = {  # noqa: F405
            "URL": _with_redis_timeouts(MARKER_LS["REDIS_URL"]),
            "DEFAULT_TIMEOUT": _timeout,
        }

# SQLite: the embedded executor writes progress from a background thread; wait for locks
# instead of failing with "database is locked".
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30  # noqa: F405

# surya's own cache location (its MODEL_CACHE_DIR), to tell whether its weights are present.
SURYA_MODEL_CACHE_DIR = os.environ.get("MODEL_CACHE_DIR") or None

# The first admin user created by `marker-ls start` on an empty database.
MARKER_LS_FIRST_ADMIN_EMAIL = os.environ.get("LABEL_STUDIO_USERNAME")
MARKER_LS_FIRST_ADMIN_PASSWORD = os.environ.get("LABEL_STUDIO_PASSWORD")
