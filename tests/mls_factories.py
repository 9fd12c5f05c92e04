"""Rows for tests, created through Label Studio's own models."""

from __future__ import annotations

import io
import itertools

from mls_render import render_page

from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG
from marker_ls_plugin.ocr.results import rectangle_value

_counter = itertools.count()


def make_user():
    from organizations.models import Organization
    from users.models import User

    n = next(_counter)
    user = User.objects.create_user(email=f"user{n}-{id(_counter)}@example.com", password="pw-for-tests")
    organization = Organization.create_organization(created_by=user, title=f"Org {n}")
    user.active_organization = organization
    user.save()
    return user


def make_project(title: str, user=None):
    from projects.models import Project

    user = user or make_user()
    return Project.objects.create(title=title, created_by=user, organization=user.active_organization)


SIZE = (900, 300)
LINES = ["Hello world 123", "Second line here", "Third and last"]


def ocr_project(title="export"):
    project = make_project(title)
    project.label_config = OCR_PRESET_CONFIG
    project.save()
    return project


def upload_task(project, image=None, name="page.png", raw: bytes | None = None):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from tasks.models import Task

    if raw is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        raw = buffer.getvalue()
    path = default_storage.save(f"upload/{project.pk}/{name}", ContentFile(raw))
    return Task.objects.create(project=project, data={"image": f"/data/{path}"})


def region(region_id, polygon, size=SIZE, label="Text", text="some text", **value_overrides):
    """A region as Label Studio's editor saves it: rectanglelabels + per-region textarea sharing ``id``."""
    geometry = {**rectangle_value(polygon, *size), **value_overrides}
    common = {"id": region_id, "to_name": "image", "original_width": size[0], "original_height": size[1],
              "image_rotation": 0, "origin": "manual"}
    return [{**common, "from_name": "label", "type": "rectanglelabels",
             "value": {**geometry, "rectanglelabels": [label]}},
            {**common, "from_name": "transcription", "type": "textarea", "value": {**geometry, "text": [text]}}]


def annotate(task, result, *, ground_truth=False, was_cancelled=False):
    from tasks.models import Annotation

    return Annotation.objects.create(task=task, project=task.project, result=result,
                                     completed_by=task.project.created_by, was_cancelled=was_cancelled,
                                     ground_truth=ground_truth)


def page_task(project, name="page.png", lines=LINES, labels=None):
    image, polygons = render_page(lines, size=SIZE, font_size=28)
    task = upload_task(project, image, name)
    result = []
    for i, (text, polygon) in enumerate(zip(lines, polygons, strict=True)):
        result += region(f"r{i}", polygon, label=(labels or ["Text"] * len(lines))[i], text=text)
    annotation = annotate(task, result)
    return task, annotation, image, polygons
