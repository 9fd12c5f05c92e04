"""The plugin's pages inside Label Studio's chrome: the dashboard, a run, a project's OCR page, and their buttons.

Also what the REST API (``web.api``) shares with them: the objects a user may see, a project's OCR overview, and why
a run cannot be cancelled.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from projects.models import Project

from marker_ls_plugin.conf import get_config, queue_backend
from marker_ls_plugin.domain import activation, runs
from marker_ls_plugin.domain.activation import choose_engine, choose_model
from marker_ls_plugin.domain.engines import engine_problem
from marker_ls_plugin.domain.preannotation import pending_tasks
from marker_ls_plugin.domain.projects import model_choice, project_config, project_controls
from marker_ls_plugin.models import FineTuneRun, OCRModel, OCRModelQuerySet, TaskOCR, projects_visible_to
from marker_ls_plugin.ocr.availability import ENGINE_CHOICES
from marker_ls_plugin.web.csrf import csrf_enforced


def get_project(user, pk: int) -> Project:
    """The project ``pk`` if ``user`` may see it (their active organization's, still a member); else 404."""
    return get_object_or_404(projects_visible_to(user), pk=pk)


def get_run(user, pk: int) -> FineTuneRun:
    """The run ``pk`` if its project is one ``user`` may see; else 404, as for a run that does not exist."""
    return get_object_or_404(FineTuneRun.objects.for_user(user).select_related("project"), pk=pk)


def get_models(user) -> OCRModelQuerySet:
    """The registry models ``user`` may see: their organization's and the instance-wide ones."""
    return OCRModel.objects.for_user(user)


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
    activation.activate_model(run.project, model)
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
