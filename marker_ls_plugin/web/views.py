"""The plugin's pages (inside Label Studio's chrome) and its REST API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from projects.api import TemplateListAPI
from projects.models import Project
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from marker_ls_plugin.conf import queue_backend
from marker_ls_plugin.domain import runs
from marker_ls_plugin.models import (
    FineTuneRun,
    OCRModel,
    OCRModelQuerySet,
    ProjectConfig,
    TaskOCR,
    new_ml_token,
    projects_visible_to,
)
from marker_ls_plugin.web.csrf import api_authentication_classes, csrf_enforced
from marker_ls_plugin.web.serializers import FineTuneRunSerializer, ProjectOCRSettingsSerializer, StartRunSerializer


def get_project(user, pk: int) -> Project:
    """The project ``pk`` if ``user`` may see it (their active organization's, still a member); else 404."""
    return get_object_or_404(projects_visible_to(user), pk=pk)


def get_run(user, pk: int) -> FineTuneRun:
    """The run ``pk`` if its project is one ``user`` may see; else 404, as for a run that does not exist."""
    return get_object_or_404(FineTuneRun.objects.for_user(user).select_related("project"), pk=pk)


def get_models(user) -> OCRModelQuerySet:
    """The registry models ``user`` may see: their organization's and the instance-wide ones."""
    return OCRModel.objects.for_user(user)


# Pages


def not_found(request):
    raise Http404("No marker-ls page here.")


@login_required
def dashboard(request):
    projects = projects_visible_to(request.user).select_related("marker_ls_config__active_model").order_by("-id")
    recent = FineTuneRun.objects.filter(project__in=projects).select_related("project", "result_model")[:20]
    context = {
        "projects": projects,
        "runs": recent,
        "models": get_models(request.user).select_related("parent")[:50],
        "queue_backend": queue_backend(),
    }
    return render(request, "marker_ls_plugin/dashboard.html", context)


@login_required
def run_detail(request, pk: int):
    run = get_run(request.user, pk)
    model = OCRModel.objects.filter(produced_by_run=run).first()
    context = {"run": run, "model": model, "result": _result_rows(model) if model else None,
               "is_active_model": model is not None and runs.active_model_for(run.project) == model,
               "retryable": run.can_retry, "retries": run.retries.order_by("created_at")}
    return render(request, "marker_ls_plugin/run_detail.html", context)


def _result_rows(model: OCRModel) -> dict:
    """Before/after validation metrics of a fine-tuned model, overall and per label, for the run page."""
    before, after = model.metrics.get("before") or {}, model.metrics.get("after") or {}
    overall = model.headline_metrics  # the accessor the admin, the CLI and the dashboard read too

    def row(label: str, old: dict, new: dict) -> dict:
        return {"label": label, "lines": new.get("lines"), "cer_before": old.get("cer"), "cer_after": new.get("cer"),
                "wer_before": old.get("wer"), "wer_after": new.get("wer"), "exact_before": old.get("exact"),
                "exact_after": new.get("exact")}

    labels = sorted(set(before.get("per_label") or {}) | set(after.get("per_label") or {}))
    return {
        "rows": [row("All lines", before, overall)] + [
            row(label, before["per_label"].get(label, {}), after["per_label"].get(label, {})) for label in labels
        ],
        "worst": model.metrics.get("worst_lines") or [],
        "base": model.metrics.get("base_checkpoint"),
        "steps": model.metrics.get("steps"), "best_step": model.metrics.get("best_step"),
        "device": model.metrics.get("device"), "seconds": model.metrics.get("seconds"),
    }


@login_required
@csrf_enforced
@require_POST
def run_start_page(request, project_pk: int):
    project = get_project(request.user, project_pk)
    try:
        run, _ = runs.start_run(project, started_by=request.user, trigger=FineTuneRun.Trigger.BUTTON)
    except runs.RunRefused as exc:
        return message_page(request, f"No run started for {project.title}", exc.problems, status=400)
    return redirect("marker_ls_plugin:run-detail", pk=run.pk)


def message_page(request, title: str, lines: list[str], *, status: int, back_url: str = "",
                 back_label: str = "Back to Marker OCR"):
    """Why a button did nothing, on a page of its own with the way back (the dashboard unless ``back_url``)."""
    context = {"title": title, "lines": lines, "back_url": back_url or reverse("marker_ls_plugin:dashboard"),
               "back_label": back_label}
    return render(request, "marker_ls_plugin/message.html", context, status=status)


@login_required
@csrf_enforced
@require_POST
def run_retry_page(request, pk: int):
    try:
        run, _ = runs.retry_run(get_run(request.user, pk), started_by=request.user)
    except runs.RunRefused as exc:
        return message_page(request, f"Run #{pk} not retried", exc.problems, status=400,
                            back_url=reverse("marker_ls_plugin:run-detail", args=[pk]), back_label=f"Back to run #{pk}")
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    return redirect("marker_ls_plugin:run-detail", pk=run.pk)


@login_required
@csrf_enforced
@require_POST
def run_activate_page(request, pk: int):
    """Activate the model a succeeded run produced, for the run's project."""
    run = get_run(request.user, pk)
    model = getattr(run, "result_model", None)
    if model is None:
        return HttpResponseBadRequest(f"run {run.pk} produced no model")
    runs.activate_model(run.project, model)
    return redirect("marker_ls_plugin:run-detail", pk=run.pk)


@login_required
@csrf_enforced
@require_POST
def run_cancel_page(request, pk: int):
    run = get_run(request.user, pk)
    if not run.is_active:
        return message_page(request, f"Run #{pk} not cancelled", [nothing_to_cancel(run)], status=409,
                            back_url=reverse("marker_ls_plugin:run-detail", args=[pk]), back_label=f"Back to run #{pk}")
    runs.cancel_run(run)
    return redirect("marker_ls_plugin:run-detail", pk=pk)


def nothing_to_cancel(run: FineTuneRun) -> str:
    return f"Run #{run.pk} already {run.get_status_display().lower()}; nothing to cancel"


# The project's OCR page: which engine pre-annotates it, why, what is wrong with it, and the choice


def ocr_overview(project) -> dict:
    """What the project's OCR page and the OCR API's GET both show: its settings, the model choice, what keeps
    the engine from loading, the tasks predicted by the current version, and the failed tasks (unsliced)."""
    from marker_ls_plugin.domain.preannotation import model_choice, project_config, project_controls
    from marker_ls_plugin.ocr.availability import engine_problem

    choice = model_choice(project)
    statuses = TaskOCR.objects.filter(task__project=project)
    return {
        "config": project_config(project), "choice": choice,
        "problem": engine_problem(choice.engine, choice.options),
        "ocr_project": project_controls(project) is not None,
        "done": statuses.filter(status=TaskOCR.Status.DONE, model_version=choice.version).count(),
        "failed": statuses.filter(status=TaskOCR.Status.ERROR).order_by("task_id"),
    }


@login_required
def project_page(request, project_pk: int):
    """The engine in use and why, what keeps it from loading, the pre-annotation counts, and the engine form."""
    from marker_ls_plugin.conf import get_config
    from marker_ls_plugin.domain.preannotation import pending_tasks

    project = get_project(request.user, project_pk)
    overview = ocr_overview(project)
    config, choice = overview["config"], overview["choice"]
    site_engine = get_config()["ENGINE"]
    context = {
        **overview,
        "project": project,
        "pending": pending_tasks(project, choice.version, unannotated_only=True).count(),
        "failed": overview["failed"][:200],
        "selected": None if config.active_model_id else (config.engine or "auto"),
        "engines": [("auto", "Automatic" if site_engine == "auto" else f"Site default ({site_engine})"),
                    ("surya", "surya"), ("rapidocr", "RapidOCR")],
        "models": OCRModel.objects.for_project(project).order_by("name"),
    }
    return render(request, "marker_ls_plugin/project.html", context)


@login_required
@csrf_enforced
@require_POST
def project_engine_page(request, project_pk: int):
    """Choose the project's engine ("auto", "surya", "rapidocr") or registry model ("model-<id>")."""
    from marker_ls_plugin.domain.preannotation import choose_engine, choose_model
    from marker_ls_plugin.ocr.availability import ENGINE_CHOICES

    project = get_project(request.user, project_pk)
    value = request.POST.get("choice", "")
    with transaction.atomic():
        if value in ENGINE_CHOICES:
            choose_engine(project, value)
        else:
            pk = value.removeprefix("model-")
            model = OCRModel.objects.for_project(project).filter(pk=pk).first() if pk.isdigit() else None
            if model is None:
                return HttpResponseBadRequest(f"unknown choice {value!r}: pick an engine or a model on the page")
            choose_model(project, model)
    return redirect("marker_ls_plugin:project", project_pk=project.pk)


# API


class TemplateListWithPreset(TemplateListAPI):
    """Label Studio's template list with the plugin's OCR preset added to it."""

    def list(self, request, *args, **kwargs):
        from marker_ls_plugin.domain.presets import ocr_template

        response = super().list(request, *args, **kwargs)
        data = dict(response.data)
        data["templates"] = [*data["templates"], ocr_template()]
        return Response(data)


class ProjectRunsAPI(APIView):
    """GET: the project's runs, newest first. POST: start a run (or get the active one)."""

    authentication_classes = api_authentication_classes()
    permission_classes = [IsAuthenticated]

    def get(self, request, project_pk: int):
        project = get_project(request.user, project_pk)
        queryset = FineTuneRun.objects.filter(project=project).select_related("result_model")[:100]
        return Response(FineTuneRunSerializer(queryset, many=True).data)

    def post(self, request, project_pk: int):
        project = get_project(request.user, project_pk)
        payload = StartRunSerializer(data=request.data, context={"project": project})
        payload.is_valid(raise_exception=True)
        try:
            run, created = runs.start_run(
                project, started_by=request.user, trigger=FineTuneRun.Trigger.API,
                config=payload.validated_data["config"], base_model=payload.validated_data.get("base_model"),
            )
        except runs.RunRefused as exc:
            return refused_response(exc)
        except (TypeError, ValueError) as exc:
            raise ValidationError({"config": [str(exc)]}) from exc
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(FineTuneRunSerializer(run).data, status=code)


def refused_response(exc: runs.RunRefused) -> Response:
    """400 with what keeps the project from training: ``detail`` in one sentence, ``problems`` one by one."""
    return Response({"detail": f"no run started: {exc}", "problems": exc.problems},
                    status=status.HTTP_400_BAD_REQUEST)


class ProjectOCRAPI(APIView):
    """GET: the project's OCR settings and pre-annotation state (model, engine error, failed tasks).

    PATCH: change ``active_model`` (a registry model id, or null for the engine default), ``engine`` ("auto",
    "surya", "rapidocr": the engine instead of any model), ``preannotate`` or ``retrain_every`` (start a run every
    N new annotations; null: never);
    ``regenerate_ml_token: true`` replaces the password of the project's HTTP ML backend credential.
    """

    authentication_classes = api_authentication_classes()
    permission_classes = [IsAuthenticated]

    def get(self, request, project_pk: int):
        return Response(self.state(get_project(request.user, project_pk)))

    def patch(self, request, project_pk: int):
        project = get_project(request.user, project_pk)
        payload = ProjectOCRSettingsSerializer(data=request.data, context={"project": project})
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        with transaction.atomic():
            if changes.pop("regenerate_ml_token", False):
                regenerate_ml_token(project)
            if "engine" in changes:  # before active_model: choosing an engine deactivates the model
                from marker_ls_plugin.domain.preannotation import choose_engine

                choose_engine(project, changes.pop("engine"))
            if "active_model" in changes:
                runs.activate_model(project, changes.pop("active_model"))
            if changes:
                config, _ = ProjectConfig.objects.get_or_create(project=project)
                for name, value in changes.items():
                    setattr(config, name, value)
                config.save(update_fields=[*changes, "updated_at"])
        return Response(self.state(project))

    @staticmethod
    def state(project) -> dict:
        overview = ocr_overview(project)
        config, choice = overview["config"], overview["choice"]
        return {
            "project": project.pk,
            "ml_backend_credential": None if config._state.adding else ml_credential(config),
            "ocr_project": overview["ocr_project"],
            "preannotate": config.preannotate,
            "active_model": config.active_model_id,
            "retrain_every": config.retrain_every,
            "engine": choice.engine,
            "engine_automatic": choice.automatic,
            "engine_reason": choice.reason,
            "engine_problem": overview["problem"],
            "model_version": choice.version,
            "engine_error": config.engine_error,
            "done": overview["done"],
            "errors": [
                {"task": item.task_id, "error": item.error, "model_version": item.model_version}
                for item in overview["failed"][:500]
            ],
        }


def ml_credential(config) -> dict:
    """The project's own Basic credential for ``/marker-ls/ml/``: it reaches this project only."""
    return {"username": f"project-{config.project_id}", "password": config.ml_token}


def regenerate_ml_token(project) -> None:
    config, _ = ProjectConfig.objects.get_or_create(project=project)
    config.ml_token = new_ml_token()
    config.save(update_fields=["ml_token", "updated_at"])


class RunAPI(APIView):
    """GET: one run with its progress, metrics and log tail."""

    authentication_classes = api_authentication_classes()
    permission_classes = [IsAuthenticated]

    def get(self, request, pk: int):
        run = get_run(request.user, pk)
        return Response(FineTuneRunSerializer(run).data)


class RunRetryAPI(APIView):
    """POST: start a new run with a failed or cancelled run's project, base model and configuration."""

    authentication_classes = api_authentication_classes()
    permission_classes = [IsAuthenticated]

    def post(self, request, pk: int):
        try:
            run, created = runs.retry_run(get_run(request.user, pk), started_by=request.user)
        except runs.RunRefused as exc:
            return refused_response(exc)
        except ValueError as exc:
            raise ValidationError({"status": [str(exc)]}) from exc
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(FineTuneRunSerializer(run).data, status=code)


class RunCancelAPI(APIView):
    """POST: cancel a queued run now, or ask a running one to stop at its next step; 409 once it has ended."""

    authentication_classes = api_authentication_classes()
    permission_classes = [IsAuthenticated]

    def post(self, request, pk: int):
        run = get_run(request.user, pk)
        if not run.is_active:
            return Response({"detail": nothing_to_cancel(run)}, status=status.HTTP_409_CONFLICT)
        return Response(FineTuneRunSerializer(runs.cancel_run(run)).data)
