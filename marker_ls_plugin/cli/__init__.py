"""``marker-ls``: run Label Studio with the plugin, its workers, and maintenance commands.

One module per command group, each adding its own subcommands (``add_parsers``) next to the commands:
``server`` (start, worker, check, reap, ml-backend), ``projects`` (project create, preannotate, export) and
``models`` (models scan, list). ``django_setup`` is what the commands that need the database share;
``python -m marker_ls_plugin.cli`` runs ``__main__``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from marker_ls_plugin import __version__
from marker_ls_plugin.cli import models, projects, server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marker-ls",
        description="Label Studio with the Marker OCR plugin. Settings: MARKER_LS_* and Label Studio's own "
                    "environment variables (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (server, projects, models):
        group.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
