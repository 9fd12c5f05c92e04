"""The ML backend protocol over HTTP under ``/marker-ls/ml/``, for callers outside this process.

Label Studio's own connector does not come here for the plugin's URL (``connector.py`` answers it
in-process). These endpoints serve other Label Studio instances and tools, behind HTTP Basic auth:

- a project's own credential, user ``project-<id>`` with the password its OCR settings show
  (``GET /marker-ls/api/projects/<id>/ocr/``), reaches that project only;
- ``MARKER_LS['ML_BACKEND_BASIC_AUTH']`` ("user:password") is the administrator's credential: it
  reaches every organization's projects, so it is for the instance's administrators only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from projects.models import Project
from tasks.models import Task

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.domain import runs
from marker_ls_plugin.domain.preannotation import on_tasks_created
from marker_ls_plugin.domain.projects import model_choice
from marker_ls_plugin.ml import protocol
from marker_ls_plugin.ml.connector import load_engine, load_task_dict_image
from marker_ls_plugin.ml.protocol import BadRequest  # one malformed-request error for the protocol
from marker_ls_plugin.models import FineTuneRun, ProjectConfig
from marker_ls_plugin.ocr.types import ImageError

PROJECT_USER = re.compile(r"project-([1-9][0-9]{0,17})")
PROJECT_UID = re.compile(r"([1-9][0-9]{0,17})(\.[0-9]*)?")  # Label Studio's "<id>.<created timestamp>"
ROUTES_WITH_PROJECT = ("setup", "predict", "webhook", "train")


@dataclass(frozen=True)
class Caller:
    """Who authenticated: a project's own credential (``project_id``), or the administrator's (None)."""

    project_id: int | None


# Authentication


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if separator else None


def _project_token(project_id: int) -> str | None:
    return ProjectConfig.objects.filter(pk=project_id).values_list("ml_token", flat=True).first()


def _caller(request) -> Caller | JsonResponse:
    header = request.META.get("HTTP_AUTHORIZATION")
    administrator = get_config()["ML_BACKEND_BASIC_AUTH"]
    if administrator and protocol.basic_auth_matches(header, administrator):
        return Caller(None)
    credentials = _basic_credentials(header)
    match = PROJECT_USER.fullmatch(credentials[0]) if credentials else None
    if match:
        token = _project_token(int(match[1]))
        if token and hmac.compare_digest(credentials[1].encode(), token.encode()):
            return Caller(int(match[1]))
    if header is None and not administrator:
        return JsonResponse({"detail": "basic authentication required: use the project's own credential "
                                       "(user project-<id>, password from GET /marker-ls/api/projects/<id>/ocr/), "
                                       "or the administrator's MARKER_LS_ML_BACKEND_BASIC_AUTH=user:password "
                                       "(Label Studio's own connector needs neither)"}, status=403)
    response = JsonResponse({"detail": "basic authentication required"}, status=401)
    response["WWW-Authenticate"] = 'Basic realm="marker-ls"'
    return response


# Validation: every malformed body is a 400 with a message, never an exception


def _project_id(value: Any, *, webhook: bool) -> int:
    """The project id a body names: a webhook's project object, or Label Studio's "<id>.<timestamp>"."""
    if webhook:
        if not isinstance(value, dict):
            raise BadRequest("'project' must be the project object Label Studio's webhooks send, with its 'id'")
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = PROJECT_UID.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise BadRequest("'project' must be a project id (Label Studio sends '<id>.<timestamp>')")
    return int(match[1])


def _check_predict(payload: dict) -> None:
    protocol.check_predict_payload(payload)  # the protocol's own rule, shared with the standalone service
    if not all(isinstance(task.get("id"), int) and not isinstance(task["id"], bool) for task in payload["tasks"]):
        raise BadRequest("'tasks' must be a list of task objects, each with an integer 'id' (tasks are read here)")


def _check_event(payload: dict) -> None:
    tasks = payload.get("tasks")
    if tasks is not None and not isinstance(tasks, list):
        raise BadRequest("'tasks' must be a list of task objects")


def _requested_project(route: str, payload: Any) -> int | None:
    """The project id the request names (None for health); BadRequest when the body is malformed."""
    if route not in ROUTES_WITH_PROJECT:
        return None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    if route == "predict":
        _check_predict(payload)
    if route in ("webhook", "train"):
        _check_event(payload)
    return _project_id(payload.get("project"), webhook=route == "webhook" or isinstance(payload.get("project"), dict))


# The view


def _event(project: Project, payload: dict) -> dict:
    action = payload.get("action")
    if action == "START_TRAINING":
        run, created = runs.start_run(project, trigger=FineTuneRun.Trigger.LABEL_STUDIO)
        return {"status": "ok", "job": str(run.pk), "created": created}
    if action == "TASKS_CREATED":
        ids = [task["id"] for task in payload.get("tasks") or [] if isinstance(task, dict) and "id" in task]
        ids = [task_id for task_id in ids if isinstance(task_id, int) and not isinstance(task_id, bool)]
        on_tasks_created(project, list(Task.objects.filter(project=project, id__in=ids).values_list("id", flat=True)))
        return {"status": "ok", "queued": len(ids)}
    return {"status": "ignored", "action": action if isinstance(action, str) else None}


def _payload(request) -> Any:
    if request.method != "POST":
        return {}
    return json.loads(request.body or b"{}")


@csrf_exempt
def endpoint(request, route: str):
    caller = _caller(request)
    if isinstance(caller, JsonResponse):
        return caller
    try:
        payload = _payload(request)
    except ValueError:
        return JsonResponse({"detail": "the body must be JSON"}, status=400)
    if request.method != "POST" and route in ROUTES_WITH_PROJECT:
        return JsonResponse({"detail": f"use POST for /{route}"}, status=405)
    try:
        project_id = _requested_project(route, payload)
    except BadRequest as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    if project_id is not None and caller.project_id not in (None, project_id):
        return JsonResponse({"detail": f"this credential reaches project {caller.project_id} only"}, status=403)
    project = Project.objects.filter(pk=project_id).first() if project_id is not None else None
    if project_id is not None and project is None:
        return JsonResponse({"detail": f"unknown project {project_id}"}, status=404)
    return _answer(request.method, route, payload, project)


def _answer(method: str, route: str, payload: dict, project: Project | None) -> JsonResponse:
    def load_image(task: dict, image_key: str):
        if not Task.objects.filter(pk=task.get("id"), project=project).exists():
            raise ImageError(f"task {task.get('id')} is not in project {project.pk}")
        return load_task_dict_image(task, image_key)

    try:
        status, body = protocol.handle(method, route, payload, lambda _: model_choice(project), load_image,
                                       load_engine, on_event=lambda event: _event(project, event))
    except runs.RunRefused as exc:  # START_TRAINING on a project that cannot train yet: say why, record no run
        return JsonResponse({"detail": f"no run started: {exc}", "problems": exc.problems}, status=400)
    return JsonResponse(body, status=status)
