"""Which annotation of a task to export, and its results paired into (region, label, text) lines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marker_ls_plugin.dataset.crops import well_formed
from marker_ls_plugin.ocr.labeling import OCRControls

ANNOTATION_RULES = ("ground_truth_else_latest", "latest")
REGION_TYPES = ("rectanglelabels", "polygonlabels", "rectangle", "polygon")


@dataclass(frozen=True)
class Region:
    """A drawn region with its label and the text of the per-region TextArea sharing its ``id``."""

    id: str
    value: dict[str, Any]
    label: str
    text: str


@dataclass(frozen=True)
class Skip:
    region: str
    reason: str


def annotation_ordering(rule: str) -> tuple[str, ...]:
    """ORM ordering of a task's non-cancelled annotations so that the first one is the one to export.

    ``ground_truth_else_latest``: the ground-truth annotation, else the most recently updated one;
    ``latest``: the most recently updated one. Ties go to the higher id (created later).
    """
    if rule == "ground_truth_else_latest":
        return ("-ground_truth", "-updated_at", "-id")
    if rule == "latest":
        return ("-updated_at", "-id")
    raise ValueError(f"unknown annotation rule {rule!r}; use one of {', '.join(ANNOTATION_RULES)}")


def choose_annotation(annotations: list[Mapping[str, Any]], rule: str) -> Mapping[str, Any] | None:
    """The annotation to export among a task's annotations (dicts as Label Studio's API gives them), or None.

    Cancelled ones are dropped; the rest are sorted by the keys of ``annotation_ordering(rule)``, so that an
    export over the API and one from the database choose alike. ``updated_at`` may be a datetime or ISO text.
    """
    ordering = annotation_ordering(rule)
    kept = [annotation for annotation in annotations if not annotation.get("was_cancelled")]
    for key in reversed(ordering):  # stable sorts, least significant key first
        field = key.lstrip("-")
        kept.sort(key=lambda annotation: _sort_value(annotation.get(field)), reverse=key.startswith("-"))
    return kept[0] if kept else None


def _sort_value(value: Any) -> tuple[bool, Any]:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (value is not None, value if value is not None else 0)


def pair_regions(result: Any, controls: OCRControls, labels: list[str] | None = None,
                 ) -> tuple[list[Region], list[Skip]]:
    """The exportable regions of an annotation result, and the skipped ones with their reason."""
    if not isinstance(result, list):
        return [], [Skip("", "malformed region")]
    shapes: dict[str, dict[str, Any]] = {}
    texts: dict[str, Any] = {}
    label_items: dict[str, Any] = {}
    skips: list[Skip] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            skips.append(Skip(str(item.get("id", "")) if isinstance(item, dict) else "", "malformed region"))
            continue
        kind, source = item.get("type"), item.get("from_name")
        if kind in REGION_TYPES and source in (None, controls.region_control):
            shapes[item["id"]] = item
        elif kind == "textarea" and source in (None, controls.textarea):
            texts[item["id"]] = item.get("value")
        elif kind == "labels":  # a plain Rectangle/Polygon tool with a separate Labels control
            label_items[item["id"]] = item.get("value")
    regions: list[Region] = []
    for region_id, item in shapes.items():
        region = _region(region_id, item, texts.get(region_id), label_items.get(region_id), controls, labels)
        if isinstance(region, Skip):
            skips.append(region)
        else:
            regions.append(region)
    return regions, skips


def _region(region_id: str, item: dict[str, Any], text_value: Any, label_value: Any, controls: OCRControls,
            labels: list[str] | None) -> Region | Skip:
    value = item.get("value")
    if not isinstance(value, dict) or not well_formed(value):
        return Skip(region_id, "malformed region")
    if item.get("image_rotation") not in (None, 0, 0.0):
        return Skip(region_id, "image rotated in the editor")
    label = _label(value, item.get("type", ""), label_value, controls)
    if label is None:
        return Skip(region_id, "malformed region")
    if controls.labels and label not in controls.labels:
        return Skip(region_id, "unknown label")
    if labels is not None and label not in labels:
        return Skip(region_id, "label not selected")
    text = _text(text_value)
    if text is None:
        return Skip(region_id, "malformed region")
    if not text:
        return Skip(region_id, "empty text")
    return Region(id=region_id, value=value, label=label, text=text)


def _label(value: dict[str, Any], kind: str, label_value: Any, controls: OCRControls) -> str | None:
    found = value.get(kind) if kind.endswith("labels") else None
    if not found and isinstance(label_value, dict):
        found = label_value.get("labels")
    if found is None or found == []:
        return controls.default_label
    if not isinstance(found, list) or not all(isinstance(name, str) for name in found):
        return None
    return found[0]


def _text(text_value: Any) -> str | None:
    """The transcription; several submissions of one TextArea are joined by a space. None if malformed."""
    if text_value is None:
        return ""
    if not isinstance(text_value, dict):
        return None
    text = text_value.get("text", [])
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not all(isinstance(part, str) for part in text):
        return None
    return " ".join(part.strip() for part in text if part.strip())
