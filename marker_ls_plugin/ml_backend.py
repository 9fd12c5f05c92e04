"""Label Studio's ML backend protocol for Marker OCR, without Django models.

Shared by the in-process connector (``connector.py``), the HTTP views under ``/marker-ls/ml/`` and
the standalone ``marker-ls ml-backend`` service. Images come from a ``load_image(task_dict)``
callable, so each caller reads them its own way (ORM and storages, or HTTP with a token).
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

ImageLoader = Callable[[dict], Any]


@dataclass(frozen=True)
class Predictor:
    """An engine with its options, and the model_version its predictions carry."""

    version: str
    engine: str
    options: dict[str, Any] = field(default_factory=dict)

    def get_engine(self):
        from marker_ls_plugin.ocr.engines import get_engine

        return get_engine(self.engine, **self.options)


def base_version(engine: str) -> str:
    """The model_version of an engine with its default checkpoints."""
    return f"marker-{engine}-base"


def basic_auth_matches(authorization: str | None, credentials: str) -> bool:
    """Whether an HTTP ``Authorization`` header carries ``credentials`` ("user:password")."""
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    return hmac.compare_digest(authorization or "", expected)


def health() -> dict:
    return {"status": "UP", "model_class": "MarkerOCR"}


def predict(predictor: Predictor, tasks: list[dict], label_config: str, context: dict | None,
            load_image: ImageLoader) -> dict:
    """``/predict``: one entry per task, in order; a drawn region in ``context`` gets its text."""
    controls = controls_from_config(label_config)
    engine = predictor.get_engine()
    drawn = (context or {}).get("result") or []
    if drawn and tasks:
        return {"results": [interactive(predictor, engine, load_image(tasks[0]), drawn[0], controls)]}
    results: list[Any] = []
    for task in tasks:
        try:
            image = load_image(task)
        except ImageError as exc:
            logger.warning("task %s: %s", task.get("id"), exc)
            results.append([])  # no prediction for this task; the others go on
            continue
        page = engine.recognize_pages([image])[0]
        results.append({"result": page_to_results(page, controls), "score": prediction_score(page.lines),
                        "model_version": predictor.version})
    return {"results": results}


def interactive(predictor: Predictor, engine, image, region: dict, controls: OCRControls) -> dict:
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
           load_image: ImageLoader, on_event: Callable[[dict], dict] | None = None) -> tuple[int, dict]:
    """One protocol request: ``(status, body)``. ``predictor_for(payload)`` picks the model."""
    route = path.rstrip("/").rsplit("/", 1)[-1]
    payload = payload or {}
    if route == "health" and method == "GET":
        return 200, health()
    if method != "POST" and route in ("setup", "predict", "webhook", "train"):
        return 405, {"detail": f"use POST for /{route}"}
    if route == "setup":
        return 200, {"model_version": predictor_for(payload).version}
    if route == "predict":
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            return 400, {"detail": "'tasks' must be a list of tasks"}
        params = payload.get("params") or {}
        try:
            body = predict(predictor_for(payload), tasks, payload.get("label_config") or "",
                           params.get("context"), load_image)
        except ValueError as exc:  # not an OCR labeling config, bad region
            return 400, {"detail": str(exc)}
        except ImageError as exc:
            return 422, {"detail": str(exc)}
        return 200, body
    if route in ("webhook", "train"):
        event = payload if route == "webhook" else {"action": "START_TRAINING", **payload}
        return (201, on_event(event)) if on_event else (501, {"detail": "training runs inside Label Studio"})
    return 404, {"detail": f"unknown route {path!r}"}
