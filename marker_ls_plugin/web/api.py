"""The plugin's REST API (DRF): a project's runs and OCR settings, one run, its retry and cancel; and Label
Studio's template list with the plugin's OCR preset added."""

from __future__ import annotations

from django.db import transaction
from projects.api import TemplateListAPI
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from marker_ls_plugin.domain import activation, runs
from marker_ls_plugin.domain.activation import choose_engine
from marker_ls_plugin.domain.first_start import ocr_template
from marker_ls_plugin.models import FineTuneRun, ProjectConfig, new_ml_token
from marker_ls_plugin.web.csrf import api_authentication_classes
from marker_ls_plugin.web.pages import get_project, get_run, nothing_to_cancel, ocr_overview
from marker_ls_plugin.web.serializers import FineTuneRunSerializer, ProjectOCRSettingsSerializer, StartRunSerializer


class TemplateListWithPreset(TemplateListAPI):
    """Label Studio's template list with the plugin's OCR preset added to it."""

    def list(self, request, *args, **kwargs):
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
                choose_engine(project, changes.pop("engine"))
            if "active_model" in changes:
                activation.activate_model(project, changes.pop("active_model"))
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
