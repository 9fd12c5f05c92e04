"""``marker-ls models scan|list``: the OCR model registry."""

from __future__ import annotations

import argparse
import sys

from marker_ls_plugin.cli.django_setup import setup_django


def scan_models(models_dir: str | None) -> bool:
    """Register checkpoint directories under <models dir>/recognition/; print a line each; False if any is broken."""
    from marker_ls_plugin.domain.registry import scan_models_dir  # after setup_django(): Django models

    report = scan_models_dir(models_dir)
    for entry in report.entries:
        print(f"models: {entry.line()}", file=sys.stderr if entry.status == "broken" else sys.stdout)
    print(f"models: {report.summary()}")
    return not report.broken


def cmd_models_scan(args: argparse.Namespace) -> int:
    """Register hand-placed checkpoint directories; exit 1 when one is broken."""
    setup_django()
    return 0 if scan_models(args.models_dir) else 1


def cmd_models_list(args: argparse.Namespace) -> int:
    """Print the registry: one model a line; with --organization, what that organization sees."""
    setup_django()
    from django.db.models import Count  # after setup_django(), as the models below
    from organizations.models import Organization  # after setup_django(): Label Studio's models

    from marker_ls_plugin.models import OCRModel  # after setup_django(): Django models

    models = OCRModel.objects.all()
    if args.organization is not None:
        if not Organization.objects.filter(pk=args.organization).exists():
            print(f"No organization {args.organization}: see the ids in Label Studio's admin "
                  "(/admin/organizations/organization/).", file=sys.stderr)
            return 2
        models = models.visible_to(args.organization)
    models = models.annotate(projects=Count("active_in")).order_by("pk")
    for model in models:
        owner = f"org {model.organization_id}" if model.organization_id else "instance"
        print(f"{model.pk:>4}  {model.name:<30} {model.kind:<9} {model.engine:<8} {owner:<9} "
              f"CER {model.cer_text:<7} active in {model.projects}  {model.checkpoint or '(engine default)'}")
    if not models:
        print("No models registered; run `marker-ls models scan` after placing checkpoints.")
    return 0


def add_parsers(commands) -> None:
    models = commands.add_parser("models", help="the OCR model registry",
                                 description="List registered OCR models, or register checkpoints placed by hand.")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    scan = models_commands.add_parser(
        "scan", help="register checkpoint directories placed in <models dir>/recognition/",
        description="Validate every directory under <models dir>/recognition/ as a surya recognition checkpoint "
                    "(config.json with model_type surya-multimodal-foundation, *.safetensors or pytorch_model.bin, "
                    "the tokenizer files vocab_math.json, specials.json and specials_dict.json; weights are not "
                    "loaded) and register the new ones. A marker_ls_model.json written by a fine-tune run makes it "
                    "a fine-tuned model. Broken directories are reported and not registered (exit 1). Hidden "
                    "directories are skipped. `marker-ls worker` scans at start too.",
    )
    scan.add_argument("--models-dir", help="models directory (default: MARKER_LS_MODELS_DIR)")
    scan.set_defaults(func=cmd_models_scan)
    listing = models_commands.add_parser("list", help="print the registered models",
                                         description="Print every registered model: id, name, kind, engine, owner "
                                                     "(an organization, or instance-wide), validation CER, how many "
                                                     "projects it is active in, and its checkpoint.")
    listing.add_argument("--organization", type=int, metavar="ID",
                         help="only what organization ID sees: its own models and the instance-wide ones")
    listing.set_defaults(func=cmd_models_list)
