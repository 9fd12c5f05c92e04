"""Label Studio's ML backend protocol for Marker OCR, without Django models.

Shared by the in-process connector (``connector.py``), the HTTP views under ``/marker-ls/ml/`` (``views.py``)
and the standalone ``marker-ls ml-backend`` service (``standalone.py``): the request checks, ``/predict`` for
whole pages and for a region an annotator just drew, and the routing of one request (``handle``). The model
is a ``predictor.Predictor``; images come from a ``load_image(task, image_key)`` callable and engines from a
``load_engine(predictor)`` callable, so each caller reads them its own way (ORM and storages with the plugin's
settings, or HTTP with a token and the service's own engine cache).
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
from collections.abc import Callable
from typing import Any

from marker_ls_plugin.ml.predictor import Predictor
from marker_ls_plugin.ocr.base import Engine
from marker_ls_plugin.ocr.labeling import OCRControls, controls_from_config
from marker_ls_plugin.ocr.results import (
    line_to_regions,
    page_to_results,
    prediction_score,
    region_id,
    region_to_polygon,
)
from marker_ls_plugin.ocr.types import ImageError, OCRLine

logger = logging.getLogger(__name__)

# ``load_image(task, image_key)``: the task's image, ``image_key`` being the labeling config's image field.
ImageLoader = Callable[[dict, str], Any]
# ``load_engine(predictor)``: the loaded engine for the predictor's engine and options.
EngineLoader = Callable[[Predictor], Engine]


def basic_auth_matches(authorization: str | None, credentials: str) -> bool:
    """Whether an HTTP ``Authorization`` header carries ``credentials`` ("user:password")."""
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    return hmac.compare_digest(authorization or "", expected)


def health() -> dict:
    return {"status": "UP", "model_class": "MarkerOCR"}


class BadRequest(ValueError):
    """A protocol request that is not well formed; the message says which part (answered 400)."""


def predict(predictor: Predictor, tasks: list[dict], label_config: str, context: dict | None,
            load_image: ImageLoader, load_engine: EngineLoader) -> dict:
    """``/predict``: one entry per task, in order; a drawn region in ``context`` gets its text."""
    controls = controls_from_config(label_config)
    engine = load_engine(predictor)
    drawn = (context or {}).get("result") or []
    if drawn and tasks:
        region = region_to_read(drawn, controls)
        return {"results": [interactive(predictor, engine, load_image(tasks[0], controls.image_key), region, controls)]}
    results: list[Any] = []
    for task in tasks:
        try:
            image = load_image(task, controls.image_key)
        except ImageError as exc:
            logger.warning("task %s: %s", task.get("id"), exc)
            results.append([])  # no prediction for this task; the others go on
            continue
        page = engine.recognize_pages([image])[0]
        results.append({"result": page_to_results(page, controls), "score": prediction_score(page.lines),
                        "model_version": predictor.version})
    return {"results": results}


def region_to_read(context_result: list[dict], controls: OCRControls) -> dict:
    """The region an annotator just drew, among every region Label Studio sends as context.

    Label Studio sends all regions of the annotation being edited, predicted ones first. The one to read is
    the newest manually drawn region that has no text yet; failing that, the newest region.
    """
    texts = {item.get("id") for item in context_result
             if item.get("type") == "textarea" and any((item.get("value") or {}).get("text") or [])}
    regions = [item for item in context_result if item.get("type") == controls.region_type] or \
        [item for item in context_result if item.get("type") != "textarea"]
    if not regions:
        raise BadRequest(f"the context holds no {controls.region_type} region to read")
    untranscribed = [item for item in regions if item.get("id") not in texts]
    manual = [item for item in untranscribed if item.get("origin") == "manual"]
    return (manual or untranscribed or regions)[-1]


def check_predict_payload(payload: Any) -> None:
    """Raise BadRequest unless ``payload`` has the shape of Label Studio's ``/predict`` request."""
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    tasks = payload.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise BadRequest("'tasks' must be a list of task objects")
    for task in tasks:
        if not isinstance(task.get("data", {}), dict):
            raise BadRequest(f"task {task.get('id')!r}: 'data' must be an object")
    if not isinstance(payload.get("label_config") or "", str):
        raise BadRequest("'label_config' must be a string")
    params = {} if payload.get("params") is None else payload["params"]
    if not isinstance(params, dict):
        raise BadRequest("'params' must be an object")
    context = {} if params.get("context") is None else params["context"]
    result = context.get("result") if isinstance(context, dict) else None
    if not isinstance(context, dict) or not isinstance([] if result is None else result, list):
        raise BadRequest("'params.context' must be an object whose 'result' is a list of regions")
    for region in result or []:
        _check_region(region)


def _check_region(region: Any) -> None:
    if not isinstance(region, dict) or not isinstance(region.get("value", {}), dict):
        raise BadRequest("each context region must be an object with a 'value' object")
    value = region.get("value") or {}
    for key in ("original_width", "original_height"):
        if region.get(key) is not None and not _positive_number(region[key]):
            raise BadRequest(f"region {region.get('id')!r}: {key!r} must be a positive number")
    if region.get("type") == "textarea":
        return
    if "points" in value:
        points = value["points"]
        if not isinstance(points, list) or len(points) < 3 or not all(
                isinstance(p, list) and len(p) == 2 and all(_number(c) for c in p) for p in points):
            raise BadRequest(f"region {region.get('id')!r}: 'points' must be a list of at least 3 [x, y] numbers")
        return
    for key in ("x", "y", "width", "height"):
        if not _number(value.get(key)):
            raise BadRequest(f"region {region.get('id')!r}: value {key!r} must be a number (percent of the image)")
    if value.get("rotation") is not None and not _number(value["rotation"]):
        raise BadRequest(f"region {region.get('id')!r}: value 'rotation' must be a number (degrees)")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: Any) -> bool:
    return _number(value) and value > 0


def interactive(predictor: Predictor, engine: Engine, image, region: dict, controls: OCRControls) -> dict:
    """Transcribe the region an annotator just drew; the answer keeps the region's id and label."""
    value = region.get("value") or {}
    width = region.get("original_width") or image.width
    height = region.get("original_height") or image.height
    polygon = [(x * image.width / width, y * image.height / height)
               for x, y in region_to_polygon(value, width, height)]
    [line] = engine.recognize_regions(image, [polygon])
    labels = value.get(controls.region_type) if controls.labeled else None
    items = line_to_regions(
        OCRLine(polygon, line.text, line.confidence), image.width, image.height, controls,
        region_id=region.get("id") or region_id(0, polygon),
        label=(labels or [controls.default_label])[0] if controls.labeled else None,
    )
    return {"result": items, "score": line.confidence, "model_version": predictor.version}


def handle(method: str, path: str, payload: dict | None, predictor_for: Callable[[dict], Predictor],
           load_image: ImageLoader, load_engine: EngineLoader,
           on_event: Callable[[dict], dict] | None = None) -> tuple[int, dict]:
    """One protocol request: ``(status, body)``. ``predictor_for(payload)`` picks the model."""
    route = path.rstrip("/").rsplit("/", 1)[-1]
    if payload is None:
        payload = {}
    if route == "health" and method == "GET":
        return 200, health()
    if method != "POST" and route in ("setup", "predict", "webhook", "train"):
        return 405, {"detail": f"use POST for /{route}"}
    if not isinstance(payload, dict):
        return 400, {"detail": "the body must be a JSON object"}
    try:
        if route == "setup":
            return 200, {"model_version": predictor_for(payload).version}
        if route == "predict":
            check_predict_payload(payload)
            params = payload.get("params") or {}
            return 200, predict(predictor_for(payload), payload["tasks"], payload.get("label_config") or "",
                                params.get("context"), load_image, load_engine)
    except ValueError as exc:  # a malformed request, not an OCR labeling config, an unknown model
        return 400, {"detail": str(exc)}
    except ImageError as exc:
        return 422, {"detail": str(exc)}
    if route in ("webhook", "train"):
        event = payload if route == "webhook" else {"action": "START_TRAINING", **payload}
        return (201, on_event(event)) if on_event else (501, {"detail": "training runs inside Label Studio"})
    return 404, {"detail": f"unknown route {path!r}"}
