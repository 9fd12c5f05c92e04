"""The wheel ships the app with its templates, static files and migrations, and not the tests."""

import subprocess
import sys
import zipfile

from mls_helpers import ROOT


def test_wheel_contents(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, timeout=300, capture_output=True)
    [wheel] = tmp_path.glob("marker_ls_plugin-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "marker_ls_plugin/templates/marker_ls_plugin/dashboard.html" in names
    assert "marker_ls_plugin/static/marker_ls_plugin/marker_ls.js" in names
    assert "marker_ls_plugin/migrations/0001_initial.py" in names
    assert not [name for name in names if name.startswith("tests/") or "/tests/" in name]
    metadata = next(name for name in names if name.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License: GPL-3.0-or-later" in text or "GPL-3.0-or-later" in text
    assert "Requires-Dist: label-studio<1.24,>=1.23" in text
    assert "Requires-Dist: surya" not in text  # installed deliberately with --no-deps (README, Installation)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "marker-ls = marker_ls_plugin.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
