"""The comparison behind `make test-label-studio` (tests/mls_label_studio_suite.py), on generated outcomes.

Running Label Studio's suite itself takes minutes and its own environment; here the parts that decide
"identical" are checked: reading pytest's junit report, the one accepted difference, and flake detection.
"""

import subprocess
import sys
import textwrap

import mls_label_studio_suite as suite
from mls_label_studio_suite import Outcome, Run

LABEL_STUDIO_URLS = [(f"/api/thing{i}/", f"api:thing{i}") for i in range(12)]
PLUGIN_URLS = [("/marker-ls/", "marker_ls_plugin:dashboard"), ("/marker-ls/api/runs/<int:pk>/", "api-run"),
               ("/admin/marker_ls_plugin/ocrmodel/", "admin:marker_ls_plugin_ocrmodel_changelist"),
               ("/api/templates/", "marker-ls-templates")]


def urls_failure(expected: int, current: list[tuple[str, str]], added: list[tuple[str, str]]) -> Outcome:
    """The failure text of Label Studio's test_urls_mismatch_with_registered, as it words it."""
    listed = "\n".join(f"  {url!r}".replace('"', "'") for url in added)
    message = (f"AssertionError: URLs number mismatch: {expected} expected but new version contains {len(current)}. "
               f"New URLs added:\n{listed}.\nIf you created, removed or updated URLs, run the following command")
    return Outcome("failed", f"{message}\n>           assert False, (\nE           {message}")


def test_only_the_plugins_urls_added_is_the_expected_difference():
    current = LABEL_STUDIO_URLS + PLUGIN_URLS
    failure = urls_failure(len(LABEL_STUDIO_URLS), current, PLUGIN_URLS)
    assert suite.only_plugin_urls_added(Outcome("passed"), failure) is None


def test_a_url_added_outside_the_plugins_prefixes_is_a_difference():
    foreign = [("/api/projects/<int:pk>/extra/", "extra")]
    failure = urls_failure(len(LABEL_STUDIO_URLS), LABEL_STUDIO_URLS + PLUGIN_URLS + foreign, PLUGIN_URLS + foreign)
    problem = suite.only_plugin_urls_added(Outcome("passed"), failure)
    assert problem and "/api/projects/<int:pk>/extra/" in problem


def test_a_label_studio_url_gone_is_a_difference_although_only_plugin_urls_are_listed():
    # One of Label Studio's removed, five of the plugin's added: the count grew by three, four are new.
    current = LABEL_STUDIO_URLS[1:] + PLUGIN_URLS
    failure = urls_failure(len(LABEL_STUDIO_URLS), current, PLUGIN_URLS)
    problem = suite.only_plugin_urls_added(Outcome("passed"), failure)
    assert problem and "gone" in problem


def test_the_urls_test_failing_otherwise_is_a_difference():
    other = Outcome("failed", "AssertionError: URL name mismatch found.")
    assert suite.only_plugin_urls_added(Outcome("passed"), other)
    failure = urls_failure(len(LABEL_STUDIO_URLS), LABEL_STUDIO_URLS + PLUGIN_URLS, PLUGIN_URLS)
    assert suite.only_plugin_urls_added(Outcome("failed", "broken in Label Studio too"), failure)


def run_of(settings: str, **states: str) -> Run:
    return Run(settings, outcomes={nid: Outcome(state) for nid, state in states.items()})


def test_flaky_in_label_studio_is_told_apart_from_a_difference_the_plugin_makes():
    references = [run_of(suite.REFERENCE, flaky="passed", broken="passed", steady="failed"),
                  run_of(suite.REFERENCE, flaky="failed", broken="passed", steady="failed"),
                  run_of(suite.REFERENCE, flaky="passed", broken="passed", steady="failed")]
    plugins = [run_of(suite.PLUGIN, flaky="failed", broken="failed", steady="failed"),
               run_of(suite.PLUGIN, flaky="passed", broken="passed", steady="failed"),
               run_of(suite.PLUGIN, flaky="passed", broken="passed", steady="failed")]
    assert suite.differing(references[0], plugins[0]) == ["broken", "flaky"]
    # Failing once in three with the plugin's settings while Label Studio's pass every time: a difference.
    assert suite.classify(["broken", "flaky"], references, plugins) == (["flaky"], ["broken"])


def test_a_test_missing_from_one_run_is_a_difference():
    assert suite.differing(run_of(suite.REFERENCE, a="passed", b="passed"), run_of(suite.PLUGIN, a="passed")) == ["b"]


def test_outcomes_and_node_ids_from_a_real_junit_report(tmp_path):
    package = tmp_path / "tests" / "area"
    package.mkdir(parents=True)
    (package / "test_generated.py").write_text(textwrap.dedent("""
        import pytest

        def test_passes():
            pass

        def test_fails():
            assert 1 == 2, "one is not two"

        @pytest.mark.skip(reason="not here")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert False

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        class TestGroup:
            @pytest.mark.parametrize("n", [1, 2])
            def test_param(self, n):
                pass

            def test_errors(self, broken):
                pass
    """))
    report = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    "tests/area/test_generated.py"], cwd=tmp_path, capture_output=True, check=False)
    outcomes = suite.read_junit(tmp_path, report)
    module = "tests/area/test_generated.py"
    assert {nid: o.state for nid, o in outcomes.items()} == {
        f"{module}::test_passes": "passed",
        f"{module}::test_fails": "failed",
        f"{module}::test_skipped": "skipped",
        f"{module}::test_xfails": "xfailed",
        f"{module}::TestGroup::test_param[1]": "passed",
        f"{module}::TestGroup::test_param[2]": "passed",
        f"{module}::TestGroup::test_errors": "error",
    }
    assert "one is not two" in outcomes[f"{module}::test_fails"].text
    assert "fixture broke" in outcomes[f"{module}::TestGroup::test_errors"].text


def test_each_run_gets_its_own_data_directory_and_none_of_this_machines_services(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKER_LS_REDIS_URL", "redis://127.0.0.1:6379/13")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "marker_ls_plugin.settings")
    monkeypatch.setenv("DJANGO_DB", "default")
    monkeypatch.setenv("POSTGRE_HOST", "127.0.0.1")
    env = suite.child_env(tmp_path)
    assert not [k for k in env if k.startswith(("MARKER_LS_", "POSTGRE_")) or k == "DJANGO_SETTINGS_MODULE"]
    assert env["DJANGO_DB"] == "sqlite"
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path)
    assert env["DATABASE_NAME"].startswith(str(tmp_path))
