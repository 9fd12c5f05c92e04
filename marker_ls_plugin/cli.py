"""``marker-ls``: run Label Studio with the plugin, its workers, and maintenance commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

SETTINGS_MODULE = "marker_ls_plugin.settings"


def _setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django

    django.setup()


def _run_checks(**options) -> bool:
    """Run Django's system checks; print problems and return False when any is an error."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    try:
        call_command("check", fail_level="ERROR", **options)
    except SystemCheckError as exc:
        print(exc, file=sys.stderr)
        return False
    return True


def cmd_start(args: argparse.Namespace) -> int:
    """Migrate, make sure an admin exists, then serve Label Studio with the plugin."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    if args.data_dir:
        os.environ["LABEL_STUDIO_BASE_DATA_DIR"] = os.path.abspath(args.data_dir)
    _setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    if not _run_checks(tags=["marker_ls"]):
        return 1
    from marker_ls_plugin.domain.accounts import ensure_admin

    ensure_admin(stdout=sys.stdout)
    if not args.no_demo:
        from marker_ls_plugin.domain.demo import ensure_demo_project

        ensure_demo_project(stdout=sys.stdout)
    _scan_models(None)
    if args.init_only:
        return 0
    _sweep()
    from marker_ls_plugin.domain.reaper import start_reaper

    # Also with RQ: when the last worker host dies, nothing else would fail its runs.
    start_reaper()
    from label_studio import server

    sys.argv = ["label-studio", "start", "--no-browser", "--port", str(args.port), "--internal-host", args.host]
    server.main()
    return 0


def _sweep() -> None:
    """Queue tasks that still lack a prediction (imports while down, an embedded queue lost in a restart)."""
    from marker_ls_plugin.domain.preannotation import sweep

    queued = sweep()
    if queued:
        print(f"Queued {queued} tasks still lacking a prediction from their project's model.")


def cmd_worker(args: argparse.Namespace) -> int:
    """Run an RQ worker on the plugin's queues (Redis must be configured)."""
    _setup_django()
    from django.core.management import call_command

    from marker_ls_plugin.conf import get_config, queue_backend

    if queue_backend() != "rq":
        print("marker-ls worker needs Redis: set MARKER_LS_REDIS_URL (without it, runs execute inside the "
              "Label Studio server process).", file=sys.stderr)
        return 2
    if not _run_checks(tags=["marker_ls"]):
        return 1
    _scan_models(None)
    config = get_config()
    queues = args.queues or [config["TRAINING_QUEUE"], config["INFERENCE_QUEUE"]]
    if config["INFERENCE_QUEUE"] in queues:
        _sweep()
    from marker_ls_plugin.domain.reaper import start_reaper

    start_reaper()  # dead workers' runs and lost jobs are failed from here, not by GET requests
    options = {"burst": args.burst, "with_scheduler": False}
    if args.name:
        options["name"] = args.name
    call_command("rqworker", *queues, **options)
    return 0


def _scan_models(models_dir: str | None) -> bool:
    """Register checkpoint directories under <models dir>/recognition/; print a line each; False if any is broken."""
    from marker_ls_plugin.domain.registry import scan_models_dir

    report = scan_models_dir(models_dir)
    for entry in report.entries:
        print(f"models: {entry.line()}", file=sys.stderr if entry.status == "broken" else sys.stdout)
    print(f"models: {report.summary()}")
    return not report.broken


def cmd_models_scan(args: argparse.Namespace) -> int:
    """Register hand-placed checkpoint directories; exit 1 when one is broken."""
    _setup_django()
    return 0 if _scan_models(args.models_dir) else 1


def cmd_models_list(args: argparse.Namespace) -> int:
    """Print the registry: one model a line; with --organization, what that organization sees."""
    _setup_django()
    from django.db.models import Count

    from marker_ls_plugin.models import OCRModel

    models = OCRModel.objects.all()
    if args.organization is not None:
        from organizations.models import Organization

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


def cmd_check(args: argparse.Namespace) -> int:
    """Run Django's system checks with the plugin's settings."""
    _setup_django()
    return 0 if _run_checks() else 1


def cmd_reap(args: argparse.Namespace) -> int:
    """Mark runs nothing will finish as failed (dead workers, lost jobs); print each with its reason."""
    _setup_django()
    from marker_ls_plugin.domain.runs import reap_stale_runs

    for run in reap_stale_runs():
        print(f"run {run.pk}: {run.error}")
    return 0


def cmd_project_create(args: argparse.Namespace) -> int:
    """Create a project with the plugin's OCR labeling preset."""
    _setup_django()
    from users.models import User

    from marker_ls_plugin.domain.presets import create_ocr_project

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
    _setup_django()
    from projects.models import Project

    from marker_ls_plugin.domain.preannotation import sweep

    project = Project.objects.get(pk=args.project) if args.project else None
    print(f"Queued {sweep(project)} tasks.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a project's corrected annotations as a line-crop fine-tuning dataset."""
    if not args.url:  # over the API (--url) no Django settings are needed
        _setup_django()
    from marker_ls_plugin.export import export_annotations_for_finetuning

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


def cmd_ml_backend(args: argparse.Namespace) -> int:
    """Serve the ML backend protocol as a separate service (no database)."""
    import logging

    from marker_ls_plugin.ml.protocol import Predictor, base_version
    from marker_ls_plugin.ml.standalone import Service, listen_refusal, newest_model, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or ("0.0.0.0" if args.basic_auth else "127.0.0.1")
    refusal = listen_refusal(host, args.basic_auth)
    if refusal:
        print(f"marker-ls ml-backend: {refusal}", file=sys.stderr)
        return 2
    checkpoint = args.recognition_checkpoint
    version = args.model_version
    if args.engine == "surya" and not checkpoint:
        found = newest_model(args.models_dir)
        if found:
            checkpoint, version = str(found), version or found.name
    options = {}
    if args.engine == "surya":
        options = {"recognition_checkpoint": checkpoint, "detection_checkpoint": args.detection_checkpoint,
                   "device": args.device}
    predictor = Predictor(version or base_version(args.engine), args.engine,
                          {k: v for k, v in options.items() if v})
    service = Service(predictor, args.label_studio_url, args.api_key, basic_auth=args.basic_auth,
                      allow_external_urls=args.allow_external_urls, models_dir=args.models_dir)
    serve(service, host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marker-ls",
        description="Label Studio with the Marker OCR plugin. Settings: MARKER_LS_* and Label Studio's own "
                    "environment variables (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = commands.add_parser(
        "start", help="migrate, create the first admin, and serve Label Studio with the plugin",
        description="Apply migrations, create the first admin user (LABEL_STUDIO_USERNAME and "
                    "LABEL_STUDIO_PASSWORD, or generated and printed once), then serve Label Studio. "
                    "Legacy API tokens follow LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN (off by default: use a "
                    "Personal Access Token from Account & Settings).",
    )
    start.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    start.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    start.add_argument("--data-dir", help="Label Studio data directory (default: LABEL_STUDIO_BASE_DATA_DIR)")
    start.add_argument("--init-only", action="store_true", help="migrate and create the admin, then exit")
    start.add_argument("--no-demo", action="store_true",
                       help="on a database without projects, do not create the pre-annotated demo project")
    start.set_defaults(func=cmd_start)

    worker = commands.add_parser(
        "worker", help="run an RQ worker for fine-tune runs and pre-annotation (needs Redis)",
        description="Run an RQ worker on the plugin's queues. Point it at the same database, Redis and "
                    "models directory as the server; on a GPU host it trains on CUDA.",
    )
    worker.add_argument("queues", nargs="*", help="queues to serve (default: training and inference)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--name", help="worker name shown in RQ")
    worker.set_defaults(func=cmd_worker)

    check = commands.add_parser(
        "check", help="report misconfiguration (Django system checks)",
        description="Run Label Studio's and the plugin's system checks (ids marker_ls.*: Redis unreachable, "
                    "models directory not writable, unknown settings, surya-ocr version). Exits non-zero on errors.",
    )
    check.set_defaults(func=cmd_check)

    reap = commands.add_parser(
        "reap", help="fail runs nothing will finish (dead workers, lost jobs)",
        description="Mark as failed, with the reason: running fine-tune runs whose worker has sent no heartbeat "
                    "for HEARTBEAT_TIMEOUT seconds, queued runs of an embedded server that stopped, and queued RQ "
                    "runs whose job is gone from Redis or failed before the run started. Workers and the embedded "
                    "executor do this every HEARTBEAT_TIMEOUT/4 seconds; use it from cron if you like.",
    )
    reap.set_defaults(func=cmd_reap)

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

    backend = commands.add_parser(
        "ml-backend", help="serve the OCR predictor as a standalone Label Studio ML backend",
        description="Serve Label Studio's ML backend protocol (/health, /setup, /predict incl. interactive "
                    "context, /webhook, /train) without a database: the marker-ocr-ml-backend service. Images "
                    "are downloaded only from --label-studio-url, with an API token. A project gets the model "
                    "Label Studio asks for in /setup (model_version, or extra_params.model_version in the Model "
                    "tab) among the directories under <models-dir>/recognition/; otherwise the default: "
                    "--recognition-checkpoint, or the newest model there (restart after adding one).",
    )
    backend.add_argument("--port", type=int, default=9090, help="HTTP port (default 9090)")
    backend.add_argument("--host", help="interface (default: 0.0.0.0 with --basic-auth, else 127.0.0.1; "
                                        "without --basic-auth only loopback is allowed)")
    backend.add_argument("--engine", choices=["surya", "rapidocr"], default="surya", help="OCR engine")
    backend.add_argument("--recognition-checkpoint", help="surya recognition checkpoint (directory or hub id)")
    backend.add_argument("--detection-checkpoint", help="surya detection checkpoint (directory or hub id)")
    backend.add_argument("--models-dir", help="use the newest model in <dir>/recognition/")
    backend.add_argument("--model-version", help="model_version of the predictions")
    backend.add_argument("--device", help="torch device for surya (default: CUDA when present)")
    backend.add_argument("--label-studio-url", help="Label Studio's URL: task images are downloaded from there only")
    backend.add_argument("--api-key", help="Label Studio API token for reading task images")
    backend.add_argument("--basic-auth", metavar="USER:PASSWORD", help="require HTTP Basic auth")
    backend.add_argument("--allow-external-urls", action="store_true",
                         help="also download task images from public http(s) hosts other than Label Studio "
                              "(never with the API key; private and link-local addresses stay refused)")
    backend.set_defaults(func=cmd_ml_backend)
    return parser


def _version() -> str:
    from marker_ls_plugin import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
