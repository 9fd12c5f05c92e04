"""Label Studio's own ML connector, answered in-process for the plugin's backend URL.

Label Studio talks to ML backends through ``ml.models.MLApi`` (health, setup, predict, train). For
a backend whose URL path is ``/marker-ls/ml/`` the plugin substitutes an object with the same
methods that answers inside this process: no HTTP round trip to itself, so Label Studio's
local-address blocking (``ML_BLOCK_LOCAL_IP``) and SSRF protection stay on. Every other URL gets
Label Studio's own ``MLApi``, unchanged.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from django.conf import settings

from marker_ls_plugin import ml_backend

logger = logging.getLogger(__name__)

IN_PROCESS_PATH = "/marker-ls/ml/"


def in_process_url() -> str:
    """The URL to give Label Studio for the in-process backend."""
    host = (getattr(settings, "HOSTNAME", "") or "http://localhost:8080").rstrip("/")
    return f"{host}{IN_PROCESS_PATH}"


def is_in_process(url: str | None) -> bool:
    return bool(url) and (urlparse(url).path.rstrip("/") + "/") == IN_PROCESS_PATH


def project_predictor(project) -> ml_backend.Predictor:
    from marker_ls_plugin.preannotation import model_choice

    choice = model_choice(project)
    return ml_backend.Predictor(choice.version, choice.engine, choice.options)


def load_task_dict_image(task: dict, image_key: str):
    """Read a serialized task's image in-process (uploads, local files, cloud storages)."""
    from tasks.models import Task

    from marker_ls_plugin.conf import get_config
    from marker_ls_plugin.ocr.images import load_task_image

    row = Task.objects.select_related("project").get(pk=task["id"])
    return load_task_image(row, image_key, max_pixels=get_config()["MAX_IMAGE_PIXELS"])


class InProcessMLApi:
    """Label Studio's ``MLApi`` interface, answered by the plugin without HTTP."""

    def __init__(self, *, url: str, **kwargs):
        self._url = url

    def _result(self, response=None, error: str | None = None):
        from ml.api_connector import MLApiResult

        if error:
            # Label Studio reads an error's text from "error"; "detail" is kept for API callers.
            return MLApiResult(url=self._url, response={"error": error, "detail": error}, type="error",
                               status_code=500)
        return MLApiResult(url=self._url, response=response)

    def health(self):
        return self._result(ml_backend.health())

    def setup(self, project, *args, **kwargs):
        return self._result({"model_version": project_predictor(project).version})

    def get_versions(self, project):
        from marker_ls_plugin.models import OCRModel

        names = OCRModel.objects.for_project(project).values_list("name", flat=True)
        versions = [project_predictor(project).version, *names]
        return self._result({"versions": list(dict.fromkeys(versions))})

    def make_predictions(self, tasks, project, context=None, **kwargs):
        tasks = list(tasks)
        try:
            if (context or {}).get("result"):
                response = ml_backend.predict(project_predictor(project), tasks, project.label_config, context,
                                              load_task_dict_image)
            else:
                response = self._predict_and_store(project, tasks)
        except Exception as exc:  # Label Studio shows the message; the request does not crash
            logger.exception("in-process prediction failed for project %s", project.pk)
            return self._result(error=f"{type(exc).__name__}: {exc}")
        return self._result(response)

    @staticmethod
    def _predict_and_store(project, tasks: list[dict]) -> dict:
        # Whole pages go through the pre-annotation pipeline, which stores the predictions itself (once
        # per model version, whoever asks first: the import queue or this request). Label Studio then
        # gets an empty list per task, so it stores no duplicate.
        from marker_ls_plugin.preannotation import preannotate_tasks

        preannotate_tasks(project.pk, [task["id"] for task in tasks])
        return {"results": [[] for _ in tasks]}

    def train(self, project, *args, **kwargs):
        from marker_ls_plugin import runs
        from marker_ls_plugin.models import FineTuneRun

        run, _ = runs.start_run(project, trigger=FineTuneRun.Trigger.LABEL_STUDIO)
        return self._result({"job": str(run.pk)})


def install() -> None:
    """Route Label Studio's ML connector to the in-process backend for the plugin's URL."""
    from ml import models as ml_models
    from ml import serializers as ml_serializers

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
    from django.db.models.signals import post_save

    create_ml_webhook = ml_models.create_ml_webhook
    post_save.disconnect(create_ml_webhook, sender=ml_models.MLBackend)

    def create_webhook_unless_in_process(sender, instance, created, **kwargs):
        if not is_in_process(instance.url):
            create_ml_webhook(sender, instance, created, **kwargs)

    post_save.connect(create_webhook_unless_in_process, sender=ml_models.MLBackend, weak=False,
                      dispatch_uid="marker_ls_create_ml_webhook")
