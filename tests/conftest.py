"""Test session: real PostgreSQL (or SQLite), Redis, RQ workers and a Label Studio server.

Under CI=true, PostgreSQL and Redis are required: tests that need them fail instead of skipping.
Every process a fixture starts is stopped by its own pid, also when the test fails.
Over 300 lines because it is the one place pytest shares fixtures with every test directory (tests/ocr/, ...):
the test database, the processes, and the shared subjects (``http``, ``tiny_surya``, ``ocr_project``,
``upload_task``); helpers that need no fixture live in the mls_*.py modules.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' helper modules

from mls_helpers import CI, ROOT, LabelStudio, free_port, start_marker_ls, stop_process  # noqa: E402
from mls_helpers import clean_environ as _clean_environ  # noqa: E402

from marker_ls_plugin.domain.queues import pid_alive  # noqa: E402

PYTHON = sys.executable
DATA = Path(tempfile.mkdtemp(prefix="marker-ls-tests-"))
PG = {"host": os.environ.get("MARKER_LS_TEST_PG_HOST", "127.0.0.1"),
      "port": int(os.environ.get("MARKER_LS_TEST_PG_PORT", "5432")), "user": "postgres"}
REDIS_URL = os.environ.get("MARKER_LS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


# --- the test process's own database -------------------------------------------------------------


def pg_connect(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(dbname=dbname, connect_timeout=3, autocommit=True, **PG)


def pg_available() -> bool:
    try:
        pg_connect().close()
        return True
    except Exception:
        return False


def migrations_fingerprint() -> str:
    """Changes whenever a migration that shapes the database could change."""
    import label_studio

    digest = hashlib.sha1(label_studio.__version__.encode())
    for path in sorted((ROOT / "marker_ls_plugin" / "migrations").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pg_env(dbname: str) -> dict[str, str]:
    return {"DJANGO_DB": "postgresql", "POSTGRE_NAME": dbname, "POSTGRE_HOST": PG["host"],
            "POSTGRE_PORT": str(PG["port"]), "POSTGRE_USER": PG["user"], "POSTGRE_PASSWORD": ""}


def migrate(env: dict[str, str]) -> None:
    """Apply every migration with the plugin's settings in a fresh process."""
    result = subprocess.run([PYTHON, "-m", "django", "migrate", "--no-input", "-v", "0"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise RuntimeError(f"migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def create_pg_test_database(tag: str = "") -> str:
    """A fresh database cloned from a migrated template (Label Studio's migrations take ~30 s).

    ``tag`` names a further database of this session (a second server's); the pid stays last, so the
    clean-up below recognises it as this process's once the process is gone.
    """
    template = f"marker_ls_tmpl_{migrations_fingerprint()}"
    name = f"marker_ls_test_{tag}{os.getpid()}"
    with pg_connect() as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'marker_ls_%'")]
        for old in names:  # leftovers of crashed sessions and templates of older migrations
            pid = old.rsplit("_", 1)[-1]
            per_process = old.startswith(("marker_ls_test_", "marker_ls_build_"))
            dead = per_process and pid.isdigit() and not pid_alive(int(pid))
            if dead or (old.startswith("marker_ls_tmpl_") and old != template):
                conn.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
        if template not in names:
            building = f"marker_ls_build_{os.getpid()}"
            conn.execute(f'CREATE DATABASE "{building}"')
            migrate({**_clean_environ(), **pg_env(building), "LABEL_STUDIO_BASE_DATA_DIR": str(DATA / "tmpl")})
            conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{template}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name



def _configure_test_process() -> str:
    engine = os.environ.get("MARKER_LS_TEST_DB") or ("postgresql" if CI or pg_available() else "sqlite")
    env = _clean_environ()
    env["LABEL_STUDIO_BASE_DATA_DIR"] = str(DATA / "main")
    env["MARKER_LS_REDIS_URL"] = REDIS_URL
    if engine == "postgresql":
        if not pg_available():
            raise pytest.UsageError(f"PostgreSQL is required (CI=true or MARKER_LS_TEST_DB) but unreachable at {PG}")
        env.update(pg_env(create_pg_test_database()))
    else:
        env.update({"DJANGO_DB": "sqlite", "DATABASE_NAME": str(DATA / "main.sqlite3")})
        migrate({**env})
    os.environ.clear()
    os.environ.update(env)
    return engine


DB_ENGINE = _configure_test_process()

import django  # noqa: E402

django.setup()

import mls_factories  # noqa: E402  (after django.setup(), as every test module)
import surya_tiny  # noqa: E402  (torch and surya load inside its functions)
from mls_render import render_page  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _module_rows():
    """What a module's fixtures and tests wrote to this process's database goes when the module ends."""
    import mls_db

    before = mls_db.snapshot()
    yield
    mls_db.restore(before)


@pytest.fixture(autouse=True)
def _test_rows(_module_rows):
    """Each test starts from the rows its module's fixtures made; what the test wrote goes after it."""
    import mls_db

    before = mls_db.snapshot()
    yield
    mls_db.restore(before)


def pytest_report_header(config):
    database = os.environ.get("POSTGRE_NAME") or os.environ.get("DATABASE_NAME")
    return f"marker-ls tests: database {DB_ENGINE} ({database}), data {DATA}, CI={CI}"


def pytest_sessionfinish(session, exitstatus):
    import mls_db
    from django.db import connections

    mls_db.close()
    connections.close_all()
    if DB_ENGINE == "postgresql":
        with pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{os.environ["POSTGRE_NAME"]}" WITH (FORCE)')


# --- processes ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url():
    """Redis db 13, emptied first; refuses a database holding anything but RQ's keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is required but unreachable at {REDIS_URL}: {exc}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    foreign = [key for key in client.scan_iter(count=1000) if not key.startswith(b"rq:")]
    if foreign:
        pytest.fail(f"Redis {REDIS_URL} holds non-test keys ({foreign[:3]}); refusing to flush it")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def start_worker(redis_url, tmp_path):
    """Start `marker-ls worker` processes on the test database; each is stopped after the test."""
    procs = []

    def start(*extra_args: str) -> subprocess.Popen:
        # The training queue only: other tests' OCR projects must not put pre-annotation work in front.
        log = open(tmp_path / f"worker-{len(procs)}.log", "w")
        command = [PYTHON, "-m", "marker_ls_plugin.cli", "worker", "marker_ls_training", *extra_args]
        proc = subprocess.Popen(command, env=dict(os.environ),
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log.name
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture(scope="session")
def label_studio():
    """One Label Studio server per session: the embedded default (SQLite, no Redis)."""
    data_dir = DATA / "server"
    env = _clean_environ()
    local_files = DATA / "local-files"
    local_files.mkdir(exist_ok=True)
    env.update({"LABEL_STUDIO_USERNAME": LabelStudio.email, "LABEL_STUDIO_PASSWORD": LabelStudio.password,
                "DJANGO_DB": "sqlite", "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(local_files),
                "MARKER_LS_ML_BACKEND_BASIC_AUTH": "ml-user:ml-secret"})
    server = start_marker_ls(env, data_dir, DATA / "server.log", "--no-demo")
    server.local_files = local_files
    try:
        yield server
    finally:
        stop_process(server.proc)


@pytest.fixture(scope="session")
def start_label_studio():
    """Start further Label Studio servers: ``start(name, settings_module, env)``, each on its own PostgreSQL clone.

    They are started the same way whatever the settings (``label-studio start``), so that two servers differ in
    their settings module only; stopped by pid and their databases dropped at the end of the session.
    """
    if not pg_available():
        message = f"PostgreSQL is required for a second Label Studio server but unreachable at {PG}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    started: list[tuple[LabelStudio, str]] = []

    def start(name: str, settings_module: str, extra_env: dict[str, str] | None = None) -> LabelStudio:
        dbname = create_pg_test_database(f"{name}_")
        data_dir = DATA / f"server-{name}"
        port = free_port()
        env = {**_clean_environ(), **pg_env(dbname), "DJANGO_SETTINGS_MODULE": settings_module,
               "LABEL_STUDIO_USERNAME": LabelStudio.email, "LABEL_STUDIO_PASSWORD": LabelStudio.password,
               "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), **(extra_env or {})}
        for quiet in ("SENTRY_DSN", "FRONTEND_SENTRY_DSN"):  # Label Studio's own settings default to live DSNs
            env.setdefault(quiet, "")
        env.setdefault("LATEST_VERSION_CHECK", "false")
        env.setdefault("COLLECT_ANALYTICS", "false")
        log_path = DATA / f"server-{name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(Path(PYTHON).parent / "label-studio"), "start", "--no-browser", "--port", str(port),
                 "--internal-host", "127.0.0.1", "--data-dir", str(data_dir)],
                env=env, cwd=DATA, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = LabelStudio(f"http://127.0.0.1:{port}", proc, log_path, data_dir)
        started.append((server, dbname))
        server.wait_until_up()
        return server

    yield start
    for server, dbname in started:
        stop_process(server.proc)
        with pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def clone_database():
    """``clone(tag)``: the environment of a fresh migrated PostgreSQL database for another process; dropped after."""
    if not pg_available():
        message = f"PostgreSQL is required but unreachable at {PG}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    names: list[str] = []

    def clone(tag: str) -> dict[str, str]:
        names.append(create_pg_test_database(tag))
        return pg_env(names[-1])

    yield clone
    with pg_connect() as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- shared test subjects -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def http(label_studio):
    """The admin's requests session on the session's Label Studio server (sends the CSRF token as its frontend)."""
    return label_studio.session()


@pytest.fixture(scope="session")
def tiny_surya(tmp_path_factory) -> dict[str, Path]:
    """Tiny random surya models (tests/surya_tiny.py), built once: ``{"recognition": dir, "detection": dir}``.

    Shared by every test: read them, never write into them (copy them first, as test_registry's ``place`` does).
    """
    # surya's settings are a pydantic BaseSettings read once, at its first import: set the environment before
    # (offline already: clean_environ sets HF_HUB_OFFLINE, which transformers reads too).
    os.environ.setdefault("TORCH_DEVICE", "cpu")
    os.environ.setdefault("DISABLE_TQDM", "true")
    return surya_tiny.build_tiny_models(tmp_path_factory.mktemp("surya-tiny"))


@pytest.fixture
def ocr_project():
    """A project with the plugin's OCR labeling config, owned by a new user in a new organization."""
    return mls_factories.ocr_project("ocr project")


@pytest.fixture
def upload_task(ocr_project):
    """``upload(image=None, name=, raw=)``: a task of ``ocr_project`` with a rendered page (or ``image``/``raw``)
    written where Label Studio keeps uploads."""

    def upload(image=None, name: str = "page.png", raw: bytes | None = None):
        if image is None and raw is None:
            image = render_page(mls_factories.LINES, size=mls_factories.SIZE, font_size=28)[0]
        return mls_factories.upload_task(ocr_project, image, name, raw)

    return upload
