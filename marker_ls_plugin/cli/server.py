"""``marker-ls start|worker|check|reap|ml-backend``: the processes that serve, and their upkeep."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from django.core.management import call_command

from marker_ls_plugin.cli.django_setup import SETTINGS_MODULE, run_checks, setup_django
from marker_ls_plugin.cli.models import scan_models
from marker_ls_plugin.conf import env_value, get_config, queue_backend
from marker_ls_plugin.ml.predictor import Predictor, base_version
from marker_ls_plugin.ml.standalone import Service, listen_refusal, newest_model, serve


def cmd_start(args: argparse.Namespace) -> int:
    """Migrate, make sure an admin exists, then serve Label Studio with the plugin."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    if args.data_dir:
        os.environ["LABEL_STUDIO_BASE_DATA_DIR"] = os.path.abspath(args.data_dir)
    setup_django()
    from label_studio import server  # after setup_django(): Label Studio's server module

    from marker_ls_plugin.domain.first_start import ensure_admin, ensure_demo_project  # after setup_django()
    from marker_ls_plugin.domain.reaper import start_reaper  # after setup_django(): it reaps runs (models)

    call_command("migrate", verbosity=0, interactive=False)
    if not run_checks(tags=["marker_ls"]):
        return 1
    ensure_admin(stdout=sys.stdout)
    if not args.no_demo:
        ensure_demo_project(stdout=sys.stdout)
    scan_models(None)
    if args.init_only:
        return 0
    sweep()
    # Also with RQ: when the last worker host dies, nothing else would fail its runs.
    start_reaper()
    sys.argv = ["label-studio", "start", "--no-browser", "--port", str(args.port), "--internal-host", args.host]
    server.main()
    return 0


def sweep() -> None:
    """Queue tasks that still lack a prediction (imports while down, an embedded queue lost in a restart)."""
    from marker_ls_plugin.domain.preannotation import sweep as sweep_projects  # after setup_django(): models

    queued = sweep_projects()
    if queued:
        print(f"Queued {queued} tasks still lacking a prediction from their project's model.")


def cmd_worker(args: argparse.Namespace) -> int:
    """Run an RQ worker on the plugin's queues (Redis must be configured)."""
    setup_django()
    from marker_ls_plugin.domain.reaper import start_reaper  # after setup_django(): it reaps runs (models)

    if queue_backend() != "rq":
        print("marker-ls worker needs Redis: set MARKER_LS_REDIS_URL (without it, runs execute inside the "
              "Label Studio server process).", file=sys.stderr)
        return 2
    if not run_checks(tags=["marker_ls"]):
        return 1
    scan_models(None)
    config = get_config()
    queues = args.queues or [config["TRAINING_QUEUE"], config["INFERENCE_QUEUE"]]
    if config["INFERENCE_QUEUE"] in queues:
        sweep()
    start_reaper()  # dead workers' runs and lost jobs are failed from here, not by GET requests
    options = {"burst": args.burst, "with_scheduler": False}
    if args.name:
        options["name"] = args.name
    call_command("rqworker", *queues, **options)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run Django's system checks with the plugin's settings."""
    setup_django()
    return 0 if run_checks() else 1


def cmd_reap(args: argparse.Namespace) -> int:
    """Mark runs nothing will finish as failed (dead workers, lost jobs); print each with its reason."""
    setup_django()
    from marker_ls_plugin.domain.runs import reap_stale_runs  # after setup_django(): Django models

    for run in reap_stale_runs():
        print(f"run {run.pk}: {run.error}")
    return 0


def cmd_ml_backend(args: argparse.Namespace) -> int:
    """Serve the ML backend protocol as a separate service (no database)."""
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
                      allow_external_urls=args.allow_external_urls, models_dir=args.models_dir,
                      engine_cache_size=env_value("ENGINE_CACHE_SIZE"))
    serve(service, host, args.port)
    return 0


def add_parsers(commands) -> None:
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
