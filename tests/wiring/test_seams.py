"""Label Studio stays whole: its own paths through every seam of the plugin, with and without the plugin.

Two real servers started the same way (``label-studio start`` on PostgreSQL clones) differ only in their
settings module: Label Studio's own and the plugin's. The same scenario, driven through Label Studio's API
with an ML backend that is not the plugin's (a stub speaking the ML protocol on loopback, hence
``ML_BLOCK_LOCAL_IP=false`` and ``SSRF_PROTECTION_ENABLED=false`` on both), must give the same answers and
make the same calls to that backend. The seams crossed: the ML connector class (``ml.models.MLApi``), Start
Training (``ml.api.MLBackendTrainAPI.post``), the ML URL validator, the ML webhook receiver, ``PROJECT_MIXIN``
(task import), the URL routing in front of Label Studio's (including the template list the plugin extends).
"""

from __future__ import annotations

import pytest
import requests
from mls_stub_ml import MODEL_VERSION, StubBackend, box

LABEL_STUDIO_SETTINGS = "core.settings.label_studio"
PLUGIN_SETTINGS = "marker_ls_plugin.settings"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Person"/></RectangleLabels>
</View>"""
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens there


@pytest.fixture(scope="module")
def stub():
    with StubBackend() as backend:
        yield backend


@pytest.fixture(scope="module")
def outcomes(start_label_studio, stub):
    """The scenario's outcome on each server: ``{settings_module: outcome}``."""
    env = {"ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    results = {}
    for name, settings_module in (("ls", LABEL_STUDIO_SETTINGS), ("plugin", PLUGIN_SETTINGS)):
        server = start_label_studio(f"seams_{name}", settings_module, env)
        stub.clear()
        results[settings_module] = scenario(server, stub)
    return results


def scenario(server, stub: StubBackend) -> dict:
    """Label Studio's own uses of an external ML backend, recorded as comparable values."""
    http = server.session()
    url = server.url
    out: dict = {}

    def record(key: str, response: requests.Response, keep=lambda body: body):
        try:
            body = response.json()
        except ValueError:
            body = None
        out[key] = (response.status_code, keep(body))
        return body

    project = record("project", http.post(f"{url}/api/projects/", timeout=30, json={
        "title": "not OCR", "label_config": CONFIG, "min_annotations_to_start_training": 1}),
        keep=lambda body: body["min_annotations_to_start_training"])
    pid = project["id"]
    # An address nothing listens on: Label Studio's own refusal, in its own words.
    record("unreachable", http.post(f"{url}/api/ml", timeout=30, json={"project": pid, "url": UNREACHABLE,
                                                                       "title": "gone"}),
           keep=lambda body: sorted(body) if isinstance(body, dict) else body)
    backend = record("backend", http.post(f"{url}/api/ml", timeout=30, json={
        "project": pid, "url": stub.url, "title": "Stub", "is_interactive": True}),
        keep=lambda body: {k: body[k] for k in ("state", "model_version", "is_interactive", "title")})
    mid = backend["id"]
    record("list", http.get(f"{url}/api/ml", params={"project": pid}, timeout=30),
           keep=lambda body: [(b["title"], b["state"], b["url"]) for b in body])
    record("versions", http.get(f"{url}/api/ml/{mid}/versions", timeout=30))
    imported = record("import", http.post(f"{url}/api/projects/{pid}/import", params={"return_task_ids": "true"},
                                          json=[{"image": "https://example.invalid/car.png"}], timeout=60),
                      keep=lambda body: body["task_count"])
    [task] = imported["task_ids"]
    record("task", http.get(f"{url}/api/tasks/{task}", timeout=60),
           keep=lambda body: [(p["model_version"], p["score"], p["result"][0]["value"]["rectanglelabels"])
                              for p in body["predictions"]])
    record("project_counts", http.get(f"{url}/api/projects/{pid}", timeout=30),
           keep=lambda body: (body["task_number"], body["total_predictions_number"], body["model_version"]))
    record("interactive", http.post(f"{url}/api/ml/{mid}/interactive-annotating", timeout=60, json={
        "task": task, "context": {"result": [{**box("Person", x=55.0), "id": "drawn", "origin": "manual"}]}}),
        keep=lambda body: body)
    record("test_request", http.post(f"{url}/api/ml/{mid}/predict/test", params={"random": "true"}, timeout=60),
           keep=lambda body: sorted(body) if isinstance(body, dict) else body)
    record("annotation", http.post(f"{url}/api/tasks/{task}/annotations/", timeout=60,
                                   json={"result": [{**box(), "id": "a1"}], "lead_time": 1.0}),
           keep=lambda body: [r["value"]["rectanglelabels"] for r in body["result"]])
    record("train", http.post(f"{url}/api/ml/{mid}/train", timeout=60), keep=lambda body: body)
    record("retrieve", http.post(f"{url}/api/dm/actions", timeout=60,
                                 params={"id": "retrieve_tasks_predictions", "project": pid},
                                 json={"selectedItems": {"all": True, "excluded": []}}),
           keep=lambda body: body)
    record("health_route", http.get(f"{url}/health", timeout=30))
    record("unknown_route", http.get(f"{url}/api/no-such-thing/", timeout=30), keep=lambda body: None)
    out["calls"] = [call_shape(method, route, body) for method, route, body in stub.calls]
    out["templates"] = [t.get("title") for t in http.get(f"{url}/api/templates/", timeout=30).json()["templates"]]
    out["webhooks"] = [(w["url"].replace(stub.url, "<stub>"), w["send_for_all_actions"])
                       for w in http.get(f"{url}/api/webhooks/", params={"project": pid}, timeout=30).json()]
    return out


def call_shape(method: str, route: str, body: dict) -> tuple:
    """A call to the stub with what differs between two servers (ids, timestamps, tokens) left out."""
    action = body.get("action") if isinstance(body, dict) else None
    context = ((body.get("params") or {}).get("context") or {}) if isinstance(body, dict) else {}
    return method, route, tuple(sorted(body)) if isinstance(body, dict) else (), action, bool(context.get("result"))


def test_label_studio_answers_the_same_with_the_plugin(outcomes):
    ours, theirs = outcomes[PLUGIN_SETTINGS], outcomes[LABEL_STUDIO_SETTINGS]
    # The plugin adds its preset to the template gallery; everything else in the scenario is Label Studio's.
    assert ours.pop("templates") == [*theirs.pop("templates"), "Marker OCR: text lines with transcriptions"]
    for key in theirs:
        assert ours[key] == theirs[key], key


def test_the_scenario_reached_the_external_backend(outcomes):
    """Not a vacuous comparison: each of Label Studio's uses of the backend really happened, with the plugin."""
    ours = outcomes[PLUGIN_SETTINGS]
    assert ours["unreachable"][0] == 400
    assert ours["backend"] == (201, {"state": "CO", "model_version": MODEL_VERSION, "is_interactive": True,
                                     "title": "Stub"})
    assert ours["task"] == (200, [(MODEL_VERSION, 0.5, ["Car"])])  # predicted by the stub when opened
    status, interactive = ours["interactive"]
    assert status == 200 and interactive["data"]["result"][0]["value"]["rectanglelabels"] == ["Person"]
    assert ours["test_request"][0] == 200
    assert ours["annotation"] == (201, [["Car"]])
    assert ours["train"] == (200, None)  # Label Studio's own empty answer to Start Training, through the seam
    assert ours["webhooks"] == [("<stub>/webhook", True)]  # Label Studio's automatic backend webhook
    calls = ours["calls"]
    routes = [route for _, route, *_ in calls]
    assert {"health", "setup", "predict", "webhook"} <= set(routes)
    # Training on annotation and Start Training both reach the backend's /webhook as START_TRAINING.
    assert sum(1 for call in calls if call[1] == "webhook" and call[3] == "START_TRAINING") >= 2
    assert any(call[1] == "predict" and call[4] for call in calls)  # the interactive request carried its context


