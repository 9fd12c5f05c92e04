"""Django for the commands that need Label Studio's database: the settings module, setup, system checks."""

from __future__ import annotations

import os
import sys

import django
from django.core.management import call_command
from django.core.management.base import SystemCheckError

SETTINGS_MODULE = "marker_ls_plugin.settings"


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()


def run_checks(**options) -> bool:
    """Run Django's system checks; print problems and return False when any is an error."""
    try:
        call_command("check", fail_level="ERROR", **options)
    except SystemCheckError as exc:
        print(exc, file=sys.stderr)
        return False
    return True
