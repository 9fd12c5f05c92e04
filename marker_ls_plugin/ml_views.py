"""The ML backend protocol over HTTP under ``/marker-ls/ml/``, for callers outside this process.

Label Studio's own connector does not come here for the plugin's URL (``connector.py`` answers it
in-process). These endpoints serve other Label Studio instances and tools, behind HTTP Basic auth
(``MARKER_LS['ML_BACKEND_BASIC_AUTH']``, "user:password"); without it they answer 403.
"""

from __future__ import annotations

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from projects.models import Project
from tasks.models import Task

from marker_ls_plugin import ml_backend
from marker_ls_plugin.conf import get_config
from marker_ls_plugin.connector import load_task_dict_image, project_predictor
from marker_ls_plugin.ocr.types import ImageError


def _authorized(request) -> JsonResponse | None:
    credentials = get_config()["ML_BACKEND_BASIC_AUTH"]
    if not credentials:
        return JsonResponse({"detail": "the HTTP ML backend is off: set MARKER_LS_ML_BACKEND_BASIC_AUTH=user:password "
                                       "(Label Studio's own connector does not need it)"}, status=403)
    if not ml_backend.basic_auth_matches(request.META.get("HTTP_AUTHORIZATION"), credentials):
        response = JsonResponse({"detail": "basic authentication required"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="marker-ls"'
        return response
    return None


def _project(payload: dict) -> Project:
    # Label Studio sends its project as "<id>.<created timestamp>".
    raw = str(payload.get("project") or "").split(".", 1)[0]
    project = Project.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
    if project is None:
        raise ImageError(f"unknown project {payload.get('project')!r}")
    return project


def _event(payload: dict) -> dict:
    from marker_ls_plugin import runs
    from marker_ls_plugin.models import FineTuneRun
    from marker_ls_plugin.preannotation import on_tasks_created

    project_info = payload.get("project") or {}
    project = Project.objects.filter(pk=project_info.get("id") if isinstance(project_info, dict) else None).first()
    action = payload.get("action")
    if project is None:
        return {"status": "ignored", "detail": "no such project"}
    if action == "START_TRAINING":
        run, created = runs.start_run(project, trigger=FineTuneRun.Trigger.LABEL_STUDIO)
        return {"status": "ok", "job": str(run.pk), "created": created}
    if action == "TASKS_CREATED":
        ids = [task["id"] for task in payload.get("tasks") or [] if isinstance(task, dict) and "id" in task]
        on_tasks_created(project, list(Task.objects.filter(project=project, id__in=ids).values_list("id", flat=True)))
        return {"status": "ok", "queued": len(ids)}
    return {"status": "ignored", "action": action}


@csrf_exempt
def protocol(request, route: str):
    refused = _authorized(request)
    if refused:
        return refused
    try:
        payload = json.loads(request.body or b"{}") if request.method == "POST" else {}
    except ValueError:
        return JsonResponse({"detail": "body must be JSON"}, status=400)
    try:
        project = _project(payload) if route in ("setup", "predict") else None
    except ImageError as exc:
        return JsonResponse({"detail": str(exc)}, status=404)

    def load_image(task: dict):
        if not Task.objects.filter(pk=task.get("id"), project=project).exists():
            raise ImageError(f"task {task.get('id')} is not in project {project.pk}")
        return load_task_dict_image(task)

    status, body = ml_backend.handle(request.method, route, payload, lambda _: project_predictor(project),
                                     load_image, on_event=_event)
    return JsonResponse(body, status=status)
