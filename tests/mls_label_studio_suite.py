"""Label Studio's own tests, run with its settings and with the plugin's: the outcomes must be identical.

Label Studio ships its test modules inside the ``label-studio`` wheel. This script runs the modules of
every area the plugin touches twice from the installed package directory, as Label Studio runs them
(``pytest --ds <settings>``): once with ``core.settings.label_studio`` and once with
``marker_ls_plugin.settings``, each with a fresh data directory and SQLite database, and compares the
outcome of every test id. It exits 1 on any difference (one, that the plugin adds URLs, is expected and
checked: ``EXPECTED_DIFFERENCES``), 2 when a run could not produce outcomes.

Run it with the interpreter of the environment that has Label Studio's test requirements
(``make test-label-studio`` builds ``.venv-ls-tests`` and runs it)::

    .venv-ls-tests/bin/python tests/mls_label_studio_suite.py [--serial] [PYTEST_ARGS_OR_NODE_IDS ...]

A test whose outcome under Label Studio's own settings changes between runs is flaky in Label Studio
itself: differing tests are run again (twice more with each settings module), and those are reported as
such, by id, and do not fail the comparison; a difference that holds while Label Studio's outcome is
stable fails it. ``--self-check`` compares Label Studio's settings with themselves.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE = "core.settings.label_studio"
PLUGIN = "marker_ls_plugin.settings"

# Relative to the label_studio package directory. Why each is here, by what the plugin touches:
MODULES = [
    # ml.models.MLApi replaced, MLBackendSerializer.validate_url wrapped, the create_ml_webhook receiver.
    "tests/ml",
    "tests/test_predictions.py",
    "tests/test_prediction_validation.py",
    # Projects and ML backends through the API (test_creating_activating_new_ml_backend).
    "tests/test_api.py",
    # Training on annotation goes through the connector; annotations fire the plugin's signals.
    "tests/test_annotations.py",
    # PROJECT_MIXIN (task counters on import), the project API.
    "tests/test_project.py",
    "projects/tests",
    "tests/data_import",
    "tests/tasks",
    # Export: Label Studio skips all of tests/test_export.py itself ("HTX-868"); its export API tests run.
    "tests/test_export.py",
    "data_export/tests",
    # A Data Manager action registered: the action API and Label Studio's own actions.
    "tests/data_manager/test_api_actions.py",
    "tests/data_manager/actions",
    "data_manager/tests/actions",
    # Webhooks: the ML webhook receiver is the plugin's.
    "tests/webhooks",
    # ROOT_URLCONF: every URL name of the resolver, the plugin's urlconf in front of Label Studio's,
    # including /api/templates/ (the plugin's TemplateListWithPreset).
    "tests/test_endpoints.py",
]

# Tests left out of both runs, with the reason. Empty: none needed so far (see README, "Label Studio's
# own tests"); a test flaky in Label Studio itself is found and reported by the recheck instead.
EXCLUDED: dict[str, str] = {}

URLS_TEST = "tests/test_endpoints.py::test_urls_mismatch_with_registered"
# Label Studio's "nothing registered but its own URLs" test; the plugin's routes live under these.
PLUGIN_URL_PREFIXES = ("/marker-ls/", "/admin/marker_ls_plugin/")
PLUGIN_URL_OVERRIDES = {("/api/templates/", "marker-ls-templates")}
_URL_COUNTS = re.compile(r"URLs number mismatch: (\d+) expected but new version contains (\d+)\. New URLs added:")
_URL_ENTRY = re.compile(r"\('([^']*)', '([^']*)'\)")

RECHECK_RUNS = 2
# More differences than this are the plugin's doing, not flakes: reported without rechecking.
RECHECK_LIMIT = 20
# Variables that would point a run at this machine's services or at another configuration.
_ENV_PREFIXES = ("MARKER_LS_", "LABEL_STUDIO_", "DJANGO_", "DATABASE_", "POSTGRE_", "REDIS_", "PYTEST_")


@dataclass
class Outcome:
    state: str  # passed, failed, error, skipped, xfailed, or a "+"-joined combination
    text: str = ""


def only_plugin_urls_added(reference: Outcome | None, plugin: Outcome | None) -> str | None:
    """None when the plugin's run failed only because its own routes were added, else why not."""
    if not (reference and reference.state == "passed" and plugin and plugin.state == "failed"):
        return "expected: passed with Label Studio's settings, failed with the plugin's"
    counts = _URL_COUNTS.search(plugin.text)
    if not counts:
        return "the failure is not the 'New URLs added' assertion"
    listed = set(_URL_ENTRY.findall(plugin.text[counts.end():].split("If you created")[0]))
    expected, current = map(int, counts.groups())
    # Label Studio's test compares lengths first: a URL of its own removed or renamed shows up only as a
    # listed set larger than the count grew by.
    if len(listed) != current - expected:
        return f"{current - expected} URLs more but {len(listed)} listed as new: one of Label Studio's is gone"
    foreign = sorted(url for url in listed
                     if not url[0].startswith(PLUGIN_URL_PREFIXES) and url not in PLUGIN_URL_OVERRIDES)
    return f"URLs added that are not the plugin's: {foreign}" if foreign else None


# Differences that follow from what the plugin is, each accepted only when its check finds exactly that.
EXPECTED_DIFFERENCES = {
    URLS_TEST: (
        "compares the resolver's URLs with the list in Label Studio's wheel (core/all_urls.json), so any app "
        "that adds routes fails it; accepted when every added URL is the plugin's and none of Label Studio's "
        "is missing (the plugin's /api/templates/ is placed in front of Label Studio's, which stays)",
        only_plugin_urls_added,
    ),
}


@dataclass
class Run:
    settings: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    returncode: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    log: Path | None = None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
        return counts


def label_studio_dir() -> Path:
    import label_studio

    return Path(label_studio.__file__).resolve().parent


def child_env(data_dir: Path) -> dict[str, str]:
    """The environment of one run: no MARKER_LS_*/Redis/PostgreSQL settings, its own data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    tmp = data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "DATABASE_NAME": str(data_dir / "label_studio.sqlite3"),
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def node_id(ls_dir: Path, classname: str, name: str) -> str:
    """pytest's node id from a junit test case ("tests.data_import.test_uploader.TestX" + name)."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (ls_dir / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return f"{classname}::{name}"


def read_junit(ls_dir: Path, report: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        states, texts = [], []
        for child in case:
            if child.tag in ("failure", "error"):
                states.append("failed" if child.tag == "failure" else "error")
                texts.append(f"{child.get('message', '')}\n{child.text or ''}".strip())
            elif child.tag == "skipped":
                states.append("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
                texts.append(child.get("message", ""))
        nid = node_id(ls_dir, case.get("classname", ""), case.get("name", ""))
        outcomes[nid] = Outcome("+".join(states) or "passed", "\n".join(texts))
    return outcomes


def run_suite(settings: str, targets: list[str], work: Path, tag: str) -> Run:
    """One pytest session of Label Studio's tests with ``settings``, in its own data directory."""
    ls_dir = label_studio_dir()
    data_dir = work / tag
    data_dir.mkdir(parents=True)
    report, log = data_dir / "junit.xml", data_dir / "pytest.log"
    deselect = [arg for nid in EXCLUDED for arg in ("--deselect", nid)]
    command = [sys.executable, "-m", "pytest", "--ds", settings, "-p", "no:cacheprovider", "-q", "-rfE",
               f"--junitxml={report}", *deselect, *targets]
    started = time.monotonic()
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=ls_dir, env=child_env(data_dir), stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # wait4: this child's own CPU time (on a busy machine the wall time says little).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    run = Run(settings, returncode=child.returncode, seconds=time.monotonic() - started, log=log,
              cpu_seconds=usage.ru_utime + usage.ru_stime)
    if report.is_file():
        run.outcomes = read_junit(ls_dir, report)
    return run


def run_both(targets: list[str], work: Path, tag: str, serial: bool, other: str = PLUGIN) -> tuple[Run, Run]:
    """Label Studio's settings and ``other`` (the plugin's, or Label Studio's again to look for its flakes)."""
    jobs = [(REFERENCE, f"{tag}-label-studio"), (other, f"{tag}-other")]
    with ThreadPoolExecutor(max_workers=1 if serial else 2) as pool:
        futures = [pool.submit(run_suite, settings, targets, work, name) for settings, name in jobs]
        reference, plugin = (future.result() for future in futures)
    return reference, plugin


def differing(reference: Run, plugin: Run) -> list[str]:
    ids = set(reference.outcomes) | set(plugin.outcomes)
    return sorted(nid for nid in ids if state(reference, nid) != state(plugin, nid))


def state(run: Run, nid: str) -> str:
    outcome = run.outcomes.get(nid)
    return outcome.state if outcome else "absent"


def expected_difference(nid: str, reference: Run, plugin: Run) -> bool:
    if nid not in EXPECTED_DIFFERENCES:
        return False
    reason, check = EXPECTED_DIFFERENCES[nid]
    problem = check(reference.outcomes.get(nid), plugin.outcomes.get(nid))
    if problem:
        print(f"  {nid}: not the expected difference ({problem})")
        return False
    print(f"  expected difference, checked: {nid}: {reason}")
    return True


def recheck(ids: list[str], work: Path, serial: bool, other: str) -> tuple[list[Run], list[Run]]:
    """Run the differing tests again with both settings modules, to tell Label Studio's flakes apart."""
    references, plugins = [], []
    for attempt in range(1, RECHECK_RUNS + 1):
        reference, plugin = run_both(ids, work, f"recheck{attempt}", serial, other)
        references.append(reference)
        plugins.append(plugin)
    return references, plugins


def unusable(run: Run) -> bool:
    # pytest: 0 all passed, 1 some failed; anything else (interrupted, internal or usage error, no
    # tests) means the outcomes are not the whole story.
    return run.returncode not in (0, 1) or not run.outcomes


def summary_line(name: str, run: Run) -> str:
    counts = run.counts()
    main = ", ".join(f"{state} {counts.pop(state, 0)}" for state in ("passed", "failed", "skipped"))
    rest = "".join(f", {state} {n}" for state, n in sorted(counts.items()))
    return f"{name:<32} {main}{rest}  ({len(run.outcomes)} tests, {run.seconds:.0f} s, CPU {run.cpu_seconds:.0f} s)"


def excerpt(text: str, head: int = 3, tail: int = 20) -> str:
    lines = text.strip().splitlines()
    if len(lines) > head + tail:
        lines = [*lines[:head], "...", *lines[-tail:]]
    return "\n".join("        " + line for line in lines)


def report(ids: list[str], references: list[Run], plugins: list[Run]) -> None:
    """Each test's outcome in every run, and the failure text of the first run with each settings module."""
    for nid in ids:
        print(f"\n  {nid}")
        for runs, name in ((references, "Label Studio's settings"), (plugins, "the plugin's settings")):
            print(f"    with {name}: {', '.join(state(run, nid) for run in runs)}")
            outcome = runs[0].outcomes.get(nid)
            if outcome and outcome.text:
                print(excerpt(outcome.text))


def classify(ids: list[str], references: list[Run], plugins: list[Run]) -> tuple[list[str], list[str]]:
    """(flaky in Label Studio itself, real differences) among ``ids``."""
    flaky, real = [], []
    for nid in ids:
        reference_states = {state(run, nid) for run in references}
        if len(reference_states) > 1:
            flaky.append(nid)
        elif {state(run, nid) for run in plugins} != reference_states:
            real.append(nid)
    return flaky, real


def compare(reference: Run, plugin: Run, work: Path, serial: bool) -> int:
    """0 when the outcomes are identical (expected differences checked, Label Studio's flakes reported)."""
    ids = [nid for nid in differing(reference, plugin) if not expected_difference(nid, reference, plugin)]
    if not ids:
        return 0
    if len(ids) > RECHECK_LIMIT:
        print(f"\nDIFFERENT OUTCOMES with the plugin's settings: {len(ids)}")
        report(ids, [reference], [plugin])
        return 1
    print(f"\n{len(ids)} test(s) differ; running them {RECHECK_RUNS} more times with each settings module")
    again = recheck(ids, work, serial, plugin.settings)
    references, plugins = [reference, *again[0]], [plugin, *again[1]]
    flaky, real = classify(ids, references, plugins)
    if flaky:
        print(f"\nFlaky in Label Studio itself (outcomes vary with its own settings), not counted: {len(flaky)}")
        report(flaky, references, plugins)
    if real:
        print(f"\nDIFFERENT OUTCOMES with the plugin's settings: {len(real)}")
        report(real, references, plugins)
    return 1 if real else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="test modules or node ids, relative to the label_studio "
                        "package directory (default: the modules listed in this script)")
    parser.add_argument("--serial", action="store_true", help="run the two configurations one after the other")
    parser.add_argument("--keep", action="store_true", help="keep the data directories, logs and junit reports")
    parser.add_argument("--self-check", action="store_true", help="compare Label Studio's settings with "
                        "themselves instead of the plugin's (finds tests that are flaky in Label Studio itself)")
    args = parser.parse_args(argv)

    targets = args.targets or MODULES
    work = Path(tempfile.mkdtemp(prefix="mls-label-studio-suite-"))
    print(f"Label Studio's own tests from {label_studio_dir()}: {' '.join(targets)}")
    for nid, reason in EXCLUDED.items():
        print(f"  excluded from both runs: {nid}: {reason}")
    started = time.monotonic()
    reference, plugin = run_both(targets, work, "run", args.serial, REFERENCE if args.self_check else PLUGIN)
    print(summary_line("with Label Studio's settings:", reference))
    print(summary_line("with Label Studio's again:" if args.self_check else "with the plugin's settings:", plugin))

    for run in (reference, plugin):
        if unusable(run):
            print(f"\nThe run with {run.settings} gave no usable outcomes (pytest exit {run.returncode}); "
                  f"its log ({run.log}) ends:\n{excerpt(run.log.read_text(errors='replace'), head=0, tail=40)}")
            print(f"Kept: {work}")
            return 2

    status = compare(reference, plugin, work, args.serial)
    expected = [nid for nid in EXPECTED_DIFFERENCES if state(reference, nid) != state(plugin, nid)]
    verdict = "Outcomes differ" if status else "Identical outcomes"
    if expected and not status:
        verdict += f" apart from {len(expected)} expected difference(s), checked"
    print(f"\n{verdict}: {len(reference.outcomes)} tests, both configurations in {time.monotonic() - started:.0f} s")
    if args.keep or status:
        print(f"Kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
