"""Organizations stay apart: every plugin URL, API call, ML protocol request and admin page, tried by a user of
one organization on the other's objects, answers 404/403 and never shows the other's names, metrics, worst
lines or paths.

The matrix runs in this process through Django's full request stack (Label Studio's middleware included) on
the test database. Its figures (requests tried, leaks found) are printed and written to
``$MARKER_LS_MATRIX_REPORT`` when that is set.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import uuid
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from mls_browser import logged_in
from mls_factories import make_user
from organizations.models import Organization
from tasks.models import Task

from marker_ls_plugin.domain.first_start import create_ocr_project
from marker_ls_plugin.ml.address import in_process_url
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

_tags = itertools.count()


@dataclass
class Org:
    """One organization's user, staff user, project, runs and models, with the strings that must not leak."""

    label: str
    organization: Organization
    user: object
    staff: object
    project: object
    task: Task
    model: OCRModel
    succeeded: FineTuneRun
    failed: FineTuneRun
    queued: FineTuneRun
    backend_id: int
    secrets: list[str] = field(default_factory=list)


def add_staff(organization: Organization):
    """A staff user (not a superuser) of ``organization`` with every permission on the plugin's models."""
    from users.models import User

    staff = User.objects.create_user(email=f"staff-{uuid.uuid4().hex[:10]}@example.com", password="pw-for-tests")
    staff.is_staff = True
    organization.add_user(staff)
    staff.active_organization = organization
    staff.save()
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="marker_ls_plugin"))
    return staff


def build_org(label: str) -> Org:
    from ml.models import MLBackend

    tag = f"{label}-{next(_tags)}-{uuid.uuid4().hex[:8]}"
    user = make_user()  # its own organization, made as Label Studio makes one (Organization.create_organization)
    organization = user.active_organization
    organization.title = f"secret-org-{tag}"
    organization.save(update_fields=["title"])
    project = create_ocr_project(user, f"secret-project-{tag}")
    ProjectConfig.objects.filter(project=project).update(preannotate=False)
    [task] = Task.objects.bulk_create([Task(project=project, data={"image": f"/data/upload/secret-image-{tag}.png"})])
    cer_before, cer_after = f"0.91{next(_tags):04d}7", f"0.42{next(_tags):04d}3"
    succeeded = FineTuneRun.objects.create(project=project, status="succeeded", started_by=user,
                                           log_tail=f"secret-log-{tag}", metrics=[{"loss": 0.5, "step": 1}])
    model = OCRModel.objects.create(
        name=f"secret-model-{tag}", kind="finetuned", engine="surya", organization=organization,
        checkpoint=f"/srv/secret-path-{tag}/recognition", produced_by_run=succeeded, created_by=user,
        metrics={"before": {"cer": float(cer_before), "lines": 9}, "after": {"cer": float(cer_after), "lines": 9},
                 "worst_lines": [{"task": task.pk, "text": f"secret-worst-{tag}", "predicted": "x", "cer": 1.0}],
                 "base_checkpoint": f"/srv/secret-base-{tag}"})
    failed = FineTuneRun.objects.create(project=project, status="failed", base_model=model, started_by=user,
                                        error=f"secret-error-{tag}")
    queued = FineTuneRun.objects.create(project=project, status="queued", base_model=model, started_by=user,
                                        queue_backend="rq", job_id=f"secret-job-{tag}")
    backend = MLBackend.objects.filter(project=project).first() or MLBackend.objects.create(
        project=project, url=in_process_url(), title="Marker OCR")
    return Org(label, organization, user, add_staff(organization), project, task, model, succeeded, failed, queued,
               backend.pk, secrets=[tag, model.name, model.checkpoint, cer_before, cer_after, f"secret-worst-{tag}",
                                    project.title, organization.title, f"secret-base-{tag}"])


@pytest.fixture(scope="module")
def world():
    shared = OCRModel.objects.create(name=f"instance-wide-{uuid.uuid4().hex[:8]}", engine="rapidocr")
    return {"a": build_org("a"), "b": build_org("b"), "shared": shared}


def basic(username: str, password: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def project_credential(org: Org) -> dict:
    return basic(f"project-{org.project.pk}", ProjectConfig.objects.get(project=org.project).ml_token)


# --- the matrix ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One request a user of ``me`` makes on ``other``'s objects, and the statuses that count as refused."""

    endpoint: str
    action: str
    method: str
    path: str
    body: object = None
    refused: tuple[int, ...] = (403, 404)
    client: str = "user"  # "user", "staff" or "ml" (the project's own Basic credential)
    form: bool = False


def attempts(me: Org, other: Org) -> list[Attempt]:
    run, failed, queued, project, model = other.succeeded, other.failed, other.queued, other.project, other.model
    admin = "/admin/marker_ls_plugin"
    uid = f"{project.pk}.0"
    task = {"id": other.task.pk, "data": other.task.data}
    return [
        # pages
        Attempt("page run", "view", "GET", f"/marker-ls/runs/{run.pk}/"),
        Attempt("page run cancel", "cancel", "POST", f"/marker-ls/runs/{queued.pk}/cancel/"),
        Attempt("page run retry", "retry", "POST", f"/marker-ls/runs/{failed.pk}/retry/"),
        Attempt("page run activate", "activate", "POST", f"/marker-ls/runs/{run.pk}/activate/"),
        Attempt("page run start", "start", "POST", f"/marker-ls/projects/{project.pk}/runs/start/"),
        Attempt("page project", "view", "GET", f"/marker-ls/projects/{project.pk}/"),
        Attempt("page project engine", "change", "POST", f"/marker-ls/projects/{project.pk}/engine/",
                {"choice": "rapidocr"}, form=True),
        Attempt("page project engine", "activate the other's model", "POST",
                f"/marker-ls/projects/{me.project.pk}/engine/", {"choice": f"model-{model.pk}"}, refused=(400,),
                form=True),
        # JSON API
        Attempt("api project runs", "list", "GET", f"/marker-ls/api/projects/{project.pk}/runs/"),
        Attempt("api project runs", "start", "POST", f"/marker-ls/api/projects/{project.pk}/runs/", {}),
        Attempt("api project runs", "start with the other's base model", "POST",
                f"/marker-ls/api/projects/{me.project.pk}/runs/", {"base_model": model.pk}, refused=(400,)),
        Attempt("api project ocr", "view", "GET", f"/marker-ls/api/projects/{project.pk}/ocr/"),
        Attempt("api project ocr", "change", "PATCH", f"/marker-ls/api/projects/{project.pk}/ocr/",
                {"retrain_every": 3, "regenerate_ml_token": True}),
        Attempt("api project ocr", "activate the other's model", "PATCH",
                f"/marker-ls/api/projects/{me.project.pk}/ocr/", {"active_model": model.pk}, refused=(400,)),
        Attempt("api run", "view", "GET", f"/marker-ls/api/runs/{run.pk}/"),
        Attempt("api run cancel", "cancel", "POST", f"/marker-ls/api/runs/{queued.pk}/cancel/", {}),
        Attempt("api run retry", "retry", "POST", f"/marker-ls/api/runs/{failed.pk}/retry/", {}),
        # ML protocol with my project's own credential
        Attempt("ml setup", "setup", "POST", "/marker-ls/ml/setup", {"project": uid}, client="ml"),
        Attempt("ml predict", "predict", "POST", "/marker-ls/ml/predict",
                {"project": uid, "tasks": [task], "label_config": OCR_PRESET_CONFIG}, client="ml"),
        Attempt("ml webhook", "START_TRAINING", "POST", "/marker-ls/ml/webhook",
                {"action": "START_TRAINING", "project": {"id": project.pk}}, client="ml"),
        Attempt("ml webhook", "TASKS_CREATED", "POST", "/marker-ls/ml/webhook",
                {"action": "TASKS_CREATED", "project": {"id": project.pk}, "tasks": [task]}, client="ml"),
        Attempt("ml train", "train", "POST", "/marker-ls/ml/train", {"project": uid}, client="ml"),
        Attempt("ml credential", "the other project's user with my password", "POST", "/marker-ls/ml/setup",
                {"project": uid}, refused=(401,), client="ml-borrowed"),
        # the admin, as a staff user (not a superuser) of my organization
        Attempt("admin model", "change page", "GET", f"{admin}/ocrmodel/{model.pk}/change/", client="staff"),
        Attempt("admin model", "change", "POST", f"{admin}/ocrmodel/{model.pk}/change/",
                {"name": model.name, "engine": "surya", "kind": "base"}, client="staff", form=True),
        Attempt("admin model", "history", "GET", f"{admin}/ocrmodel/{model.pk}/history/", client="staff"),
        Attempt("admin model", "delete page", "GET", f"{admin}/ocrmodel/{model.pk}/delete/", client="staff"),
        Attempt("admin model", "delete", "POST", f"{admin}/ocrmodel/{model.pk}/delete/", {"post": "yes"},
                client="staff", form=True),
        Attempt("admin run", "change page", "GET", f"{admin}/finetunerun/{run.pk}/change/", client="staff"),
        Attempt("admin run", "cancel action", "POST", f"{admin}/finetunerun/",
                {"action": "cancel_runs", "_selected_action": [queued.pk], "index": 0}, refused=(200, 302),
                client="staff", form=True),
        Attempt("admin run", "start with the other's project", "POST", f"{admin}/finetunerun/add/",
                {"project": project.pk, "config": "{}"}, refused=(200,), client="staff", form=True),
        Attempt("admin run", "start with the other's base model", "POST", f"{admin}/finetunerun/add/",
                {"project": me.project.pk, "base_model": model.pk, "config": "{}"}, refused=(200,),
                client="staff", form=True),
        Attempt("admin project", "change page", "GET", f"{admin}/ocrproject/{project.pk}/change/", client="staff"),
        Attempt("admin project", "start action", "POST", f"{admin}/ocrproject/",
                {"action": "start_runs", "_selected_action": [project.pk], "index": 0}, refused=(200, 302),
                client="staff", form=True),
        Attempt("admin project", "activate the other's model", "POST",
                f"{admin}/ocrproject/{me.project.pk}/change/", inline_form(me, model.pk), refused=(200,),
                client="staff", form=True),
    ]


def listings(me: Org) -> list[Attempt]:
    """Pages that list what I may see: they answer, and show nothing of the other organization."""
    admin = "/admin/marker_ls_plugin"
    return [
        Attempt("page dashboard", "list", "GET", "/marker-ls/", refused=(200,)),
        Attempt("page project", "own page", "GET", f"/marker-ls/projects/{me.project.pk}/", refused=(200,)),
        Attempt("api project ocr", "own settings", "GET", f"/marker-ls/api/projects/{me.project.pk}/ocr/",
                refused=(200,)),
        Attempt("api project runs", "own runs", "GET", f"/marker-ls/api/projects/{me.project.pk}/runs/",
                refused=(200,)),
        Attempt("admin index", "list", "GET", f"{admin}/", refused=(200,), client="staff"),
        Attempt("admin model", "list", "GET", f"{admin}/ocrmodel/", refused=(200,), client="staff"),
        Attempt("admin model", "add page", "GET", f"{admin}/ocrmodel/add/", refused=(200,), client="staff"),
        Attempt("admin model", "search", "GET", f"{admin}/ocrmodel/?q=secret", refused=(200,), client="staff"),
        Attempt("admin run", "list", "GET", f"{admin}/finetunerun/", refused=(200,), client="staff"),
        Attempt("admin run", "add page", "GET", f"{admin}/finetunerun/add/", refused=(200,), client="staff"),
        Attempt("admin project", "list", "GET", f"{admin}/ocrproject/", refused=(200,), client="staff"),
        Attempt("admin project", "own change page", "GET", f"{admin}/ocrproject/{me.project.pk}/change/",
                refused=(200,), client="staff"),
        Attempt("ml setup", "own project", "POST", "/marker-ls/ml/setup", {"project": f"{me.project.pk}.0"},
                refused=(200,), client="ml"),
        Attempt("ml health", "own credential", "GET", "/marker-ls/ml/health", refused=(200,), client="ml"),
        Attempt("api templates", "list with the OCR preset", "GET", "/api/templates/", refused=(200,)),
        # Label Studio's versions endpoint, answered by the plugin's connector, for my own backend
        Attempt("label studio ml versions", "own backend", "GET", f"/api/ml/{me.backend_id}/versions",
                refused=(200,)),
    ]


def inline_form(me: Org, active_model: int) -> dict:
    config = ProjectConfig.objects.get(project=me.project)
    prefix = "marker_ls_config"
    return {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "1", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1", f"{prefix}-0-project": str(me.project.pk),
            f"{prefix}-0-active_model": str(active_model), f"{prefix}-0-preannotate": "on",
            f"{prefix}-0-retrain_every": str(config.retrain_every or "")}


def send(clients: dict, attempt: Attempt):
    client = clients[attempt.client]
    extra = {}
    if attempt.client in ("ml", "ml-borrowed"):
        extra = clients[attempt.client + "-auth"]
    if attempt.method == "GET":
        return client.get(attempt.path, **extra)
    if attempt.form:
        return client.post(attempt.path, attempt.body, **extra)
    return client.generic(attempt.method, attempt.path, json.dumps(attempt.body or {}),
                          content_type="application/json", **extra)


def state_of(org: Org) -> dict:
    """Everything the other organization's requests could have changed."""
    config = ProjectConfig.objects.get(project=org.project)
    return {
        "runs": sorted(FineTuneRun.objects.filter(project=org.project).values_list("pk", "status", "cancel_requested")),
        "config": (config.active_model_id, config.retrain_every, config.preannotate, config.ml_token),
        "model": OCRModel.objects.filter(pk=org.model.pk).values_list("name", "kind", "organization_id").first(),
    }


def clients_for(me: Org, other: Org) -> dict:
    return {"user": logged_in(me.user), "staff": logged_in(me.staff), "ml": Client(), "ml-borrowed": Client(),
            "ml-auth": project_credential(me),
            "ml-borrowed-auth": basic(f"project-{other.project.pk}",
                                      ProjectConfig.objects.get(project=me.project).ml_token)}


@dataclass
class Tally:
    tried: int = 0
    endpoints: set = field(default_factory=set)
    leaks: list = field(default_factory=list)
    wrong_status: list = field(default_factory=list)


def run_matrix(me: Org, other: Org, tally: Tally) -> None:
    clients = clients_for(me, other)
    before = state_of(other)
    for attempt in [*listings(me), *attempts(me, other)]:  # listings first: a refused delete must not hide one
        response = send(clients, attempt)
        body = response.content.decode(errors="replace")
        tally.tried += 1
        tally.endpoints.add(attempt.endpoint)
        where = f"{me.label}->{other.label} {attempt.endpoint} {attempt.action} {attempt.method} {attempt.path}"
        if response.status_code not in attempt.refused:
            tally.wrong_status.append(f"{where}: {response.status_code} {body[:300]}")
        tally.leaks += [f"{where}: {secret!r} in the answer" for secret in other.secrets if secret in body]
    if state_of(other) != before:
        tally.leaks.append(f"{me.label}->{other.label} me->other state: the other organization's data changed")


def test_each_organization_sees_nothing_of_the_other(world, capsys):
    tally = Tally()
    run_matrix(world["a"], world["b"], tally)
    run_matrix(world["b"], world["a"], tally)
    figures = {"requests": tally.tried, "endpoints": len(tally.endpoints), "directions": 2,
               "leaks": len(tally.leaks), "wrong_status": len(tally.wrong_status)}
    with capsys.disabled():
        print(f"\norganization isolation matrix: {json.dumps(figures)}")
    if os.environ.get("MARKER_LS_MATRIX_REPORT"):
        with open(os.environ["MARKER_LS_MATRIX_REPORT"], "w") as report:
            json.dump({**figures, "leak_list": tally.leaks, "wrong_status_list": tally.wrong_status}, report)
    assert tally.tried >= 2 * 40
    assert tally.wrong_status == [] and tally.leaks == [], "\n".join(tally.wrong_status + tally.leaks)


def test_the_matrix_finds_leaks_when_the_rule_is_off(monkeypatch):
    """The matrix can fail: with the one visibility rule switched off, it finds the other's models."""
    from marker_ls_plugin.models import OCRModelQuerySet

    me, other = build_org("a-off"), build_org("b-off")  # their own: with the rule off, requests change things
    monkeypatch.setattr(OCRModelQuerySet, "visible_to", lambda self, organization: self.all())
    tally = Tally()
    run_matrix(me, other, tally)
    leaking = {leak.split(": ")[0].split(" ", 1)[-1] for leak in tally.leaks}
    for endpoint in ("admin model change page", "api project ocr activate the other's model", "page dashboard list",
                     "admin model list", "label studio ml versions own backend", "me->other state"):
        assert any(name.startswith(endpoint) for name in leaking), (endpoint, sorted(leaking))


def test_the_matrix_requests_work_for_the_owner(world):
    """The same requests by the owning organization succeed: the refusals above come from the organization."""
    me = world["a"]
    user, staff = logged_in(me.user), logged_in(me.staff)
    admin = "/admin/marker_ls_plugin"
    assert user.get(f"/marker-ls/runs/{me.succeeded.pk}/").status_code == 200
    assert me.model.name in user.get("/marker-ls/").content.decode()
    assert user.get(f"/marker-ls/api/runs/{me.succeeded.pk}/").json()["result_model"]["name"] == me.model.name
    assert user.get(f"/marker-ls/api/projects/{me.project.pk}/ocr/").status_code == 200
    for path in (f"{admin}/ocrmodel/{me.model.pk}/change/", f"{admin}/finetunerun/{me.succeeded.pk}/change/",
                 f"{admin}/ocrproject/{me.project.pk}/change/"):
        response = staff.get(path)
        assert response.status_code == 200 and me.model.name in response.content.decode(), path
    changelist = staff.get(f"{admin}/ocrmodel/").content.decode()
    assert me.model.name in changelist and world["shared"].name in changelist
    versions = user.get(f"/api/ml/{me.backend_id}/versions").json()["versions"]
    assert me.model.name in versions and world["shared"].name in versions
    assert world["b"].model.name not in versions
    setup = Client().post("/marker-ls/ml/setup", {"project": f"{me.project.pk}.0"}, content_type="application/json",
                          **project_credential(me))
    assert setup.status_code == 200, setup.content


def test_choices_offer_the_own_and_instance_wide_models_only(world):
    me, other = world["a"], world["b"]
    client = logged_in(me.user)
    url = f"/marker-ls/api/projects/{me.project.pk}/ocr/"
    for model, expected in ((world["shared"], 200), (me.model, 200), (other.model, 400)):
        response = client.patch(url, {"active_model": model.pk}, content_type="application/json")
        assert response.status_code == expected, response.content
    refused = client.patch(url, {"active_model": other.model.pk}, content_type="application/json").json()
    nonexistent = client.patch(url, {"active_model": 2**31 - 1}, content_type="application/json").json()
    # Another organization's model is refused in the words used for a model that does not exist.
    assert (str(refused["validation_errors"]).replace(str(other.model.pk), "ID")
            == str(nonexistent["validation_errors"]).replace(str(2**31 - 1), "ID"))
    client.patch(url, {"active_model": None}, content_type="application/json")
    # a run that was given another organization's base model (before this rule) is not retried with it
    legacy = FineTuneRun.objects.create(project=me.project, status="failed", base_model=other.model)
    for path in (f"/marker-ls/api/runs/{legacy.pk}/retry/", f"/marker-ls/runs/{legacy.pk}/retry/"):
        response = client.post(path, {}, content_type="application/json")
        assert response.status_code == 400 and other.model.name not in response.content.decode(), response.content
    assert not FineTuneRun.objects.filter(project=me.project, status__in=FineTuneRun.ACTIVE_STATUSES).exclude(
        pk=me.queued.pk).exists()


def test_a_project_credential_reaches_its_project_only_and_can_be_replaced(world):
    me = world["a"]
    client = logged_in(me.user)
    url = f"/marker-ls/api/projects/{me.project.pk}/ocr/"
    credential = client.get(url).json()["ml_backend_credential"]
    assert credential["username"] == f"project-{me.project.pk}" and len(credential["password"]) >= 32
    old = basic(credential["username"], credential["password"])
    setup = {"project": f"{me.project.pk}.0"}
    assert Client().post("/marker-ls/ml/setup", setup, content_type="application/json", **old).status_code == 200
    renewed = client.patch(url, {"regenerate_ml_token": True}, content_type="application/json").json()
    assert renewed["ml_backend_credential"]["password"] != credential["password"]
    assert Client().post("/marker-ls/ml/setup", setup, content_type="application/json", **old).status_code == 401
    new = basic(credential["username"], renewed["ml_backend_credential"]["password"])
    assert Client().post("/marker-ls/ml/setup", setup, content_type="application/json", **new).status_code == 200


def test_label_studio_own_endpoints_answer_for_other_organizations(world):
    """What the plugin cannot isolate: Label Studio Community's own ``/api/ml/<id>/versions`` checks
    ``Project.has_permission``, which lets every user of the instance through; the versions it asks the plugin
    for are the other project's. The README says so; this test shows when Label Studio changes."""
    me, other = world["a"], world["b"]
    response = logged_in(me.user).get(f"/api/ml/{other.backend_id}/versions")
    assert response.status_code == 200 and other.model.name in response.json()["versions"]


# --- who owns a model -----------------------------------------------------------------------------------


@pytest.fixture
def tiny(tiny_surya):
    """The session's tiny recognition checkpoint: shared, so tests place hard-linked copies of it."""
    return tiny_surya["recognition"]


def place(tiny, directory, name: str, metadata: dict | None = None):
    import shutil

    target = directory / "recognition" / name
    shutil.copytree(tiny, target, copy_function=os.link)
    if metadata is not None:
        (target / "marker_ls_model.json").write_text(json.dumps(metadata))
    return target


def test_registered_models_belong_to_the_organization_that_trained_them(world, tiny, tmp_path):
    from marker_ls_plugin.domain.registry import register_model_dir, scan_models_dir

    me, other = world["a"], world["b"]
    run = FineTuneRun.objects.create(project=me.project, status="succeeded")
    place(tiny, tmp_path, "org-brought")
    # a run's output names its parent; another organization's model is not recorded as one
    place(tiny, tmp_path, "org-trained", {"name": f"org-trained-{run.pk}", "run": run.pk, "parent": other.model.name})
    registered = {entry.path.name: entry.model for entry in scan_models_dir(tmp_path).registered}
    assert registered["org-brought"].organization_id is None  # what an administrator brings is instance-wide
    assert registered["org-trained"].organization_id == me.organization.pk
    assert registered["org-trained"].parent is None
    # the training job names the organization itself (finetune.py), whatever the directory says
    assigned, created = register_model_dir(place(tiny, tmp_path, "org-assigned"), organization=other.organization)
    assert created and assigned.organization_id == other.organization.pk


def test_the_migration_gives_existing_fine_tuned_models_their_runs_organization(world):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("marker_ls_plugin.migrations.0005_model_organization_and_project_ml_token")
    me = world["a"]
    run = FineTuneRun.objects.create(project=me.project, status="succeeded")
    legacy = OCRModel.objects.create(name=f"legacy-{uuid.uuid4().hex[:8]}", kind="finetuned", produced_by_run=run)
    brought = OCRModel.objects.create(name=f"legacy-brought-{uuid.uuid4().hex[:8]}")
    ProjectConfig.objects.filter(project=me.project).update(ml_token="")
    migration.assign_fine_tuned_models(apps, None)
    migration.give_each_project_its_token(apps, None)
    legacy.refresh_from_db(), brought.refresh_from_db()
    assert legacy.organization_id == me.organization.pk and brought.organization_id is None
    tokens = set(ProjectConfig.objects.values_list("ml_token", flat=True))
    assert "" not in tokens and len(tokens) == ProjectConfig.objects.count()  # one each, none shared


def test_staff_change_their_organizations_models_only(world):
    me = world["a"]
    staff = logged_in(me.staff)
    admin = "/admin/marker_ls_plugin/ocrmodel"
    shared = staff.get(f"{admin}/{world['shared'].pk}/change/")
    assert shared.status_code == 200 and 'name="name"' not in shared.content.decode()  # instance-wide: view only
    assert staff.post(f"{admin}/{world['shared'].pk}/delete/", {"post": "yes"}).status_code == 403
    assert OCRModel.objects.filter(pk=world["shared"].pk).exists()
    own = staff.get(f"{admin}/{me.model.pk}/change/").content.decode()
    assert 'name="name"' in own and 'name="organization"' not in own
    name = f"staff-added-{uuid.uuid4().hex[:8]}"
    response = staff.post(f"{admin}/add/", {"name": name, "engine": "rapidocr", "kind": "base", "metrics": "{}"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert OCRModel.objects.get(name=name).organization_id == me.organization.pk
