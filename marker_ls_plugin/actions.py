"""Data Manager actions (the Actions menu of a project's task list)."""

from __future__ import annotations

from core.permissions import AllPermissions
from data_manager.actions import register_action

all_permissions = AllPermissions()


def marker_ls_preannotate(project, queryset, **kwargs):
    """Re-run OCR pre-annotation on the selected tasks with the project's current model."""
    from marker_ls_plugin.preannotation import project_controls, schedule

    if project_controls(project) is None:
        return {"processed_items": 0, "detail": "This project's labeling config has no Image, region and "
                                                "per-region TextArea for OCR."}
    ids = list(queryset.values_list("id", flat=True))
    queued = schedule(project, ids, force=True)
    return {"processed_items": queued, "detail": f"Queued {queued} tasks for Marker OCR pre-annotation."}


def register_actions() -> None:
    register_action(
        marker_ls_preannotate,
        "Pre-annotate with Marker OCR",
        order=91,
        permission=all_permissions.predictions_any,
        dialog={
            "title": "Pre-annotate with Marker OCR",
            "text": "Run OCR on the selected tasks with the project's active model; each gets a new prediction.",
            "type": "confirm",
        },
    )
