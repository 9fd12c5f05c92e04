"""Label Studio's own ML connector, answered in-process for the plugin's backend URL.

Label Studio talks to ML backends through ``ml.models.MLApi`` (health, setup, predict, train). For
a backend whose URL path is ``/marker-ls/ml/`` (``address.py``) the plugin substitutes an object with
the same methods that answers inside this process: no HTTP round trip to itself, so Label Studio's
local-address blocking (``ML_BLOCK_LOCAL_IP``) and SSRF protection stay on. Every other URL gets
Label Studio's own ``MLApi``, unchanged. ``install()`` puts in the seams: the connector class, the
backend URL check, the backend's webhook, and Start Training (``MLBackendTrainAPI.post``).

Imported once Django's apps are loaded (``apps.ready``, the HTTP views): it imports Label Studio's models.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from core.current_request import CurrentContext
from django.conf import settings
from django.db.models.signals import post_save
from django.urls import reverse
from ml import models as ml_models
from ml import serializers as ml_serializers
from ml.api import MLBackendTrainAPI
from ml.api_connector import MLApi as LabelStudioMLApi
from ml.api_connector import MLApiResult
from projects.models import Project
from rest_framework.response import Response
from tasks.models import Prediction, Task

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.dataset.storage import load_task_image
from marker_ls_plugin.domain import runs
from marker_ls_plugin.domain.engines import engine_problem, get_engine
from marker_ls_plugin.domain.predictions import preannotate_tasks
from marker_ls_plugin.domain.projects import model_choice
from marker_ls_plugin.ml import protocol
from marker_ls_plugin.ml.address import is_in_process
from marker_ls_plugin.ml.predictor import Predictor
from marker_ls_plugin.models import FineTuneRun, OCRModel, ProjectConfig, TaskOCR
from marker_ls_plugin.ocr.base import Engine
from marker_ls_plugin.ocr.types import EngineUnavailable, ImageError

logger = logging.getLogger(__name__)


def load_task_dict_image(task: dict, image_key: str):
    """Read a serialized task's image in-process (uploads, local files, cloud storages: ``dataset.storage``)."""
    row = Task.objects.select_related("project").get(pk=task["id"])
    return load_task_image(row, image_key, max_pixels=get_config()["MAX_IMAGE_PIXELS"])


def load_engine(predictor: Predictor) -> Engine:
    """The predictor's engine from this process's cache, as pre-annotation loads it (the plugin's settings)."""
    return get_engine(predictor.engine, **predictor.options)


class InProcessMLApi:
    """Label Studio's ``MLApi`` interface, answered by the plugin without HTTP."""

    def __init__(self, *, url: str, **kwargs):
        self._url = url

    def _result(self, response=None, error: str | None = None):
        if error:
            # Label Studio reads an error's text from "error"; "detail" is kept for API callers.
            return MLApiResult(url=self._url, response={"error": error, "detail": error}, type="error",
                               status_code=500)
        return MLApiResult(url=self._url, response=response)

    def health(self):
        return self._result(protocol.health())

    def setup(self, project, *args, **kwargs):
        """The model_version of the project's engine; an error (the Model tab's state Error) when it cannot load."""
        choice = model_choice(project)
        problem = engine_problem(choice.engine, choice.options)
        if problem:
            page = reverse("marker_ls_plugin:project", kwargs={"project_pk": project.pk})
            host = (getattr(settings, "HOSTNAME", "") or "").rstrip("/")
            return self._result(error=f"The OCR engine {choice.engine} cannot load: {problem} "
                                      f"The project's OCR page: {host}{page}")
        return self._result({"model_version": choice.version})

    def get_versions(self, project):
        names = OCRModel.objects.for_project(project).values_list("name", flat=True)
        versions = [model_choice(project).version, *names]
        return self._result({"versions": list(dict.fromkeys(versions))})

    def make_predictions(self, tasks, project, context=None, **kwargs):
        """Whole pages (Label Studio passes no ``context``), or the region an annotator just drew.

        Interactive annotating always passes a ``context`` dict; its ``result`` holds the drawn region.
        Failures come back as Label Studio's error result, whose text the editor shows the annotator.
        """
        tasks = list(tasks)
        try:
            if context is None:
                return self._result(self._predict_and_store(project, tasks))
            if not context.get("result"):
                raise protocol.BadRequest("the request carries no drawn region; draw a box or polygon on the "
                                            "page with Auto-Annotation on")
            return self._result(protocol.predict(model_choice(project), tasks, project.label_config, context,
                                                 load_task_dict_image, load_engine))
        except EngineUnavailable as exc:
            message = f"Marker OCR could not load its OCR engine, so it read nothing: {exc}"
        except ImageError as exc:
            message = f"Marker OCR could not read this task's image: {exc}"
        except ValueError as exc:  # a malformed region, a labeling config that is not OCR-shaped
            message = f"Marker OCR cannot read this region: {exc}"
        except Exception as exc:  # Label Studio shows the message; the request does not crash
            logger.exception("in-process prediction failed for project %s", project.pk)
            message = f"Marker OCR failed ({type(exc).__name__}: {exc}); the Label Studio server log has the details"
        logger.warning("project %s: %s", project.pk, message)
        return self._result(error=message)

    def _prep_prediction_req(self, tasks, project, context=None):
        """The body Label Studio's ``MLApi`` would POST to ``/predict`` (the Model tab's test request shows it).

        Unlike Label Studio's, it leaves out the project's task-data login and password: nothing here needs them.
        """
        uid = LabelStudioMLApi._create_project_uid(self, project)  # "<id>.<created timestamp>", Label Studio's rule
        return {"tasks": list(tasks), "project": uid, "label_config": project.label_config,
                "params": {"context": context}}

    def _request(self, url_suffix, request=None, *args, **kwargs):
        """Label Studio's low-level call; its Model tab's "Send Test Request" sends ``/predict`` this way.

        Each task gets the prediction the project's current model stored for it, made first (by pre-annotation)
        when it has none, so the test shows what annotators see and stores nothing twice.
        """
        if url_suffix.strip("/") != "predict":
            return self._result(error=f"the in-process Marker OCR backend answers no '{url_suffix}' request")
        request = request or {}
        project = Project.objects.get(pk=int(str(request.get("project")).split(".", 1)[0]))
        tasks = request.get("tasks") or []
        context = (request.get("params") or {}).get("context")
        if context is not None:
            return self.make_predictions(tasks, project, context)
        try:
            return self._stored_predictions(project, [task["id"] for task in tasks])
        except Exception as exc:
            logger.exception("in-process test prediction failed for project %s", project.pk)
            return self._result(error=f"Marker OCR failed ({type(exc).__name__}: {exc})")

    def _get_url(self, url_suffix):
        """The URL Label Studio shows for a call (the test request's "url")."""
        return urljoin(self._url.rstrip("/") + "/", url_suffix)

    def _stored_predictions(self, project, task_ids: list[int]):
        preannotate_tasks(project.pk, task_ids)  # those that have none yet
        version = model_choice(project).version
        latest = {prediction.task_id: prediction for prediction in  # the newest of each task's wins
                  Prediction.objects.filter(task_id__in=task_ids, model_version=version).order_by("created_at", "id")}
        for task_id in task_ids:
            if task_id not in latest:
                reason = (TaskOCR.objects.filter(task_id=task_id, model_version=version).values_list("error", flat=True)
                          .first() or ProjectConfig.objects.filter(project=project)
                          .values_list("engine_error", flat=True).first() or "see the project's OCR page")
                return self._result(error=f"Marker OCR has no prediction of task {task_id} by {version}: {reason}")
        return self._result({"results": [
            {"result": latest[pk].result, "score": latest[pk].score, "model_version": version} for pk in task_ids]})

    @staticmethod
    def _predict_and_store(project, tasks: list[dict]) -> dict:
        # Whole pages go through the pre-annotation pipeline, which stores the predictions itself (once
        # per model version, whoever asks first: the import queue or this request). Label Studio then
        # gets an empty list per task, so it stores no duplicate.
        preannotate_tasks(project.pk, [task["id"] for task in tasks])
        return {"results": [[] for _ in tasks]}

    def train(self, project, *args, **kwargs):
        """``MLBackend.train()``'s call; the user of the request under way (Label Studio's CurrentContext) starts it.

        Start Training in the Model tab does not come here (train_api_post answers it with the run's link).
        """
        user = CurrentContext.get_user()
        try:
            run, _ = start_training(project, user if getattr(user, "is_authenticated", False) else None)
        except runs.RunRefused as exc:
            return self._result(error=f"no run started: {exc}")
        return self._result({"job": str(run.pk)})


def start_training(project, user):
    """A run started from Label Studio (its Model tab or an ML backend call) by ``user``: ``(run, created)``."""
    return runs.start_run(project, started_by=user, trigger=FineTuneRun.Trigger.LABEL_STUDIO)


def train_api_post(label_studio_post):
    """``MLBackendTrainAPI.post`` (Start Training): for the plugin's backend, start a run and answer with its link.

    Another backend's request reaches Label Studio's own method with every argument as received. The plugin's
    records the user who pressed the button and answers ``{"run", "status", "url", "detail"}``, repeated under
    ``"response"`` (what the Model tab's dialog shows), or 400 ``{"detail"}`` saying why the project cannot train yet.
    """

    def post(self, request, *args, **kwargs):
        backend = ml_models.MLBackend.objects.filter(pk=self.kwargs.get("pk")).select_related("project").first()
        if backend is None or not is_in_process(backend.url):
            return label_studio_post(self, request, *args, **kwargs)
        self.check_object_permissions(request, backend)  # as Label Studio's own method does
        try:
            run, created = start_training(backend.project, request.user)
        except runs.RunRefused as exc:
            return Response({"detail": f"no run started: {exc}"}, status=400)
        url = request.build_absolute_uri(reverse("marker_ls_plugin:run-detail", args=[run.pk]))
        state = "started" if created else f"already {run.status}"
        answer = {"run": run.pk, "status": run.status, "url": url, "detail": f"Fine-tune run #{run.pk} {state}: {url}"}
        # The Model tab's Start Training dialog prints the body's "response" (Label Studio's own answer has none).
        return Response({**answer, "response": answer})

    return post


def install() -> None:
    """Route Label Studio's ML connector to the in-process backend for the plugin's URL."""
    if getattr(ml_models.MLApi, "marker_ls_in_process", False):
        return
    label_studio_api = ml_models.MLApi

    class MLApi(label_studio_api):
        """Label Studio's connector class; for the plugin's URL, ``MLApi(...)`` gives the in-process one.

        Label Studio builds connectors with keyword arguments only (``url=``, ``timeout=``...); every
        argument reaches Label Studio's own ``__init__`` exactly as given.
        """

        marker_ls_in_process = True

        def __new__(cls, *args, **kwargs):
            if is_in_process(kwargs.get("url")):
                return InProcessMLApi(**kwargs)
            return super().__new__(cls)

    ml_models.MLApi = MLApi

    validate_url = ml_serializers.MLBackendSerializer.validate_url

    def validate_in_process_url(self, value):
        # The in-process backend is never fetched over the network, so the local-address check
        # that guards real URLs does not apply to it.
        return value if is_in_process(value) else validate_url(self, value)

    ml_serializers.MLBackendSerializer.validate_url = validate_in_process_url

    # Label Studio adds a webhook at <backend url>/webhook for every new backend. The in-process backend
    # hears of imports and annotations directly, and a webhook to a local address would be refused by
    # the same SSRF protection (with an exception, failing the request that created the backend).
    create_ml_webhook = ml_models.create_ml_webhook
    post_save.disconnect(create_ml_webhook, sender=ml_models.MLBackend)

    def create_webhook_unless_in_process(sender, instance, created, **kwargs):
        if not is_in_process(instance.url):
            create_ml_webhook(sender, instance, created, **kwargs)

    post_save.connect(create_webhook_unless_in_process, sender=ml_models.MLBackend, weak=False,
                      dispatch_uid="marker_ls_create_ml_webhook")

    MLBackendTrainAPI.post = train_api_post(MLBackendTrainAPI.post)
