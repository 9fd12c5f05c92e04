"""``marker-ls project create|preannotate|export``: OCR projects, their pre-annotation and their dataset."""

from __future__ import annotations

import argparse
import sys

from marker_ls_plugin.cli.django_setup import setup_django
from marker_ls_plugin.export import export_annotations_for_finetuning


def cmd_project_create(args: argparse.Namespace) -> int:
    """Create a project with the plugin's OCR labeling preset."""
    setup_django()
    from users.models import User  # after setup_django(): Label Studio's models

    from marker_ls_plugin.domain.first_start import create_ocr_project  # after setup_django(): Django models

    users = User.objects.filter(email=args.owner) if args.owner else User.objects.filter(is_superuser=True)
    owner = users.order_by("id").first()
    if owner is None:
        print(f"No user {args.owner or '(superuser)'}; run `marker-ls start` once or pass --owner.", file=sys.stderr)
        return 2
    project = create_ocr_project(owner, args.title)
    print(f"Created project {project.pk} \"{project.title}\" with the Marker OCR preset.")
    return 0


def cmd_preannotate(args: argparse.Namespace) -> int:
    """Queue pre-annotation of every task lacking a prediction from its project's current model."""
    setup_django()
    from projects.models import Project  # after setup_django(): Label Studio's models

    from marker_ls_plugin.domain.preannotation import sweep  # after setup_django(): Django models

    project = Project.objects.get(pk=args.project) if args.project else None
    print(f"Queued {sweep(project)} tasks.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a project's corrected annotations as a line-crop fine-tuning dataset."""
    if not args.url:  # over the API (--url) no Django settings are needed
        setup_django()
    labels = [name.strip() for name in args.labels.split(",") if name.strip()] if args.labels else None

    def progress(tasks: int, lines: int) -> None:
        if tasks % max(1, args.progress_every) == 0:
            print(f"{tasks} tasks, {lines} lines", file=sys.stderr, flush=True)

    try:
        manifest = export_annotations_for_finetuning(args.project, args.output, labels=labels,
                                                     val_fraction=args.val_fraction, seed=args.seed,
                                                     padding=args.padding, progress=progress, url=args.url,
                                                     api_key=args.api_key)
    except ValueError as exc:
        print(f"marker-ls export: {exc}", file=sys.stderr)
        return 2
    counts = manifest["counts"]
    print(f"Exported {counts['train']} train and {counts['val']} val lines to {args.output} "
          f"({len(manifest['skipped'])} regions skipped; see manifest.json). "
          f"Content hash {manifest['content_sha256'][:16]}.")
    return 0


def add_parsers(commands) -> None:
    project = commands.add_parser("project", help="manage OCR projects",
                                  description="Create Label Studio projects set up for Marker OCR.")
    project_commands = project.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    create = project_commands.add_parser(
        "create", help="create a project with the OCR labeling preset",
        description="Create a project with the guide's enhanced OCR labeling config (Text, Handwriting, "
                    "Signature, Table, Diagram; per-region transcription). Imported pages are pre-annotated.",
    )
    create.add_argument("--title", required=True, help="project title (3 characters or more)")
    create.add_argument("--owner", help="owner's e-mail (default: the first superuser)")
    create.set_defaults(func=cmd_project_create)

    preannotate = commands.add_parser(
        "preannotate", help="queue OCR for tasks still lacking a prediction from the current model",
        description="Sweep OCR projects (or one) for tasks without a prediction from the project's current model "
                    "and queue them for pre-annotation. Tasks whose image failed are not retried; use the Data "
                    "Manager action \"Pre-annotate with Marker OCR\" to force them.",
    )
    preannotate.add_argument("--project", type=int, help="only this project id")
    preannotate.set_defaults(func=cmd_preannotate)

    export = commands.add_parser(
        "export", help="write a project's corrected annotations as a line-crop fine-tuning dataset",
        description="Export one annotation per task (the ground-truth one, else the most recently updated "
                    "non-cancelled one) as line crops (rotated boxes deskewed) with their text: "
                    "DIR/images/*.png, DIR/train.jsonl, DIR/val.jsonl and DIR/manifest.json (counts, split "
                    "rule, content hash, skipped regions with reasons). A line's split depends only on its "
                    "task and region ids and the seed, so it never moves as the project grows. Reads the "
                    "database in-process, or with --url a running Label Studio over its API (the same files "
                    "either way).",
    )
    export.add_argument("--project", type=int, required=True, help="project id")
    export.add_argument("--output", required=True, metavar="DIR", help="output folder (re-exports reuse crops)")
    export.add_argument("--labels", help="only these region labels, comma-separated, e.g. Text,Handwriting")
    export.add_argument("--val-fraction", type=float, default=0.1, help="share of lines in val (default 0.1)")
    export.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    export.add_argument("--padding", type=int, default=4, help="pixels added around each box (default 4)")
    export.add_argument("--url", help="read from the Label Studio at this URL over its API instead of the "
                                      "database, e.g. http://localhost:8080")
    export.add_argument("--api-key", help="API key for --url: a Personal Access Token or legacy token "
                                          "(default: LABEL_STUDIO_API_KEY)")
    export.add_argument("--progress-every", type=int, default=100, metavar="N",
                        help="print a progress line to stderr every N tasks (default 100)")
    export.set_defaults(func=cmd_export)
