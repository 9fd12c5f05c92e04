"""Data Manager actions (the Actions menu of a project's task list)."""

from __future__ import annotations

from core.permissions import AllPermissions
from data_manager.actions import register_action

from marker_ls_plugin.domain.preannotation import requeue
from marker_ls_plugin.domain.projects import project_controls

all_permissions = AllPermissions()


def marker_ls_preannotate(project, queryset, **kwargs):
    """Re-run OCR pre-annotation on the selected tasks with the project's current model.

    ``async`` makes Label Studio's Data Manager say the action goes on in the background; ``detail`` says what.
    """
    if project_controls(project) is None:
        return {"processed_items": 0, "detail": "This project's labeling config has no Image, region and "
                                                "per-region TextArea for OCR."}
    queued, skipped, version = requeue(project, list(queryset.values_list("id", flat=True)))
    detail = f"Queued {queued} tasks for Marker OCR pre-annotation"
    if skipped:
        detail += f"; skipped {skipped} already predicted by {version} and unchanged since"
    return {"processed_items": queued, "async": True, "detail": detail + "."}


def register_actions() -> None:
    register_action(
        marker_ls_preannotate,
        "Pre-annotate with Marker OCR",
        order=91,
        permission=all_permissions.predictions_any,
        dialog={
            "title": "Pre-annotate with Marker OCR",
            "text": "Run OCR on the selected tasks with the project's active model. A task changed since that "
                    "model predicted it gets a new prediction in place of the old one; an unchanged one is skipped.",
            "type": "confirm",
        },
    )
