"""The plugin's OCR labeling preset: a Label Studio template and a project factory."""

from __future__ import annotations

from django.db import transaction

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

TEMPLATE_TITLE = "Marker OCR: text lines with transcriptions"


def ocr_template() -> dict:
    """The preset as an entry of Label Studio's template gallery (Create Project > Labeling Setup)."""
    return {
        "title": TEMPLATE_TITLE,
        "type": "community",
        "group": "Computer Vision",
        "image": "/static/templates/optical-character-recognition.png",
        "details": (
            "<h1>Correct OCR text lines</h1><p>Marker OCR pre-annotates every imported page with one box per "
            "text line and its transcription; fix boxes and text, then export or fine-tune.</p>"
        ),
        "config": OCR_PRESET_CONFIG,
    }


def create_ocr_project(user, title: str, description: str = ""):
    """A project with the preset config, owned by ``user`` in their active organization."""
    from projects.models import Project

    from marker_ls_plugin.models import ProjectConfig

    with transaction.atomic():
        project = Project.objects.create(
            title=title, description=description, label_config=OCR_PRESET_CONFIG, created_by=user,
            organization=user.active_organization,
        )
        ProjectConfig.objects.get_or_create(project=project)
    return project
