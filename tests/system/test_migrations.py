"""Migrations: complete for the models, applied on PostgreSQL (this process) and SQLite (the server)."""

import sqlite3
from io import StringIO

from django.core.management import call_command
from django.db import connection


def test_models_and_migrations_agree():
    out = StringIO()
    call_command("makemigrations", "marker_ls_plugin", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_applied_on_this_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = 'marker_ls_plugin'")
        assert "0001_initial" in {row[0] for row in cursor.fetchall()}
    tables = connection.introspection.table_names()
    assert {"marker_ls_plugin_finetunerun", "marker_ls_plugin_ocrmodel", "marker_ls_plugin_projectconfig"} <= set(
        tables)


def test_applied_on_the_servers_sqlite(label_studio):
    with sqlite3.connect(label_studio.data_dir / "label_studio.sqlite3") as db:
        names = {row[0] for row in db.execute("SELECT name FROM django_migrations WHERE app='marker_ls_plugin'")}
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "0001_initial" in names
    assert "marker_ls_one_active_run_per_project" in indexes


def test_ci_runs_the_suite_on_postgresql():
    from mls_helpers import CI

    if CI:
        assert connection.vendor == "postgresql"
    assert connection.vendor in ("postgresql", "sqlite")
