"""The README keeps up with the code: settings, checks, subcommands and the two opening commands."""

import re

from mls_helpers import ROOT

from marker_ls_plugin.cli import build_parser
from marker_ls_plugin.conf import DEFAULTS

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented():
    for key in DEFAULTS:
        assert f"| `{key}` |" in README, key


def test_every_system_check_id_is_documented():
    source = (ROOT / "marker_ls_plugin" / "wiring" / "checks.py").read_text()
    ids = set(re.findall(r'id="(marker_ls\.[EW]\d{3})"', source))
    assert ids
    documented = set(re.findall(r"`(marker_ls\.[EW]\d{3})`", README))
    assert ids == documented


def test_every_subcommand_is_documented():
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert f"marker-ls {name}" in README, name


def test_readme_opens_with_the_two_commands_ci_runs():
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make start", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_changelog_and_licence_ship():
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()


def test_every_training_argument_is_documented_with_its_default():
    import dataclasses

    from marker_ls_plugin.training.config import TrainingArguments

    defaults = TrainingArguments()
    for field in dataclasses.fields(TrainingArguments):
        row = next((line for line in README.splitlines() if line.startswith(f"| `{field.name}` |")), None)
        assert row, field.name
        value = getattr(defaults, field.name)
        shown = row.split("|")[2].strip().strip("`")
        if value is None:
            assert shown == "unset", field.name
        elif isinstance(value, bool):
            assert shown == str(value).lower(), field.name
        elif isinstance(value, list):
            assert shown == str(value).replace("'", '"'), field.name
        else:
            assert type(value)(shown) == value, field.name
