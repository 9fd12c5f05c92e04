"""The first-start demo: an OCR project from the preset with a few generated pages, pre-annotated."""

from __future__ import annotations

import io
from typing import TextIO

from marker_ls_plugin.ocr.availability import surya_weights

DEMO_TITLE = "Marker OCR demo"
PAGES = [
    ["Invoice 2026-0117", "Date: 25 November 2026", "Widgets, blue (x12)   $148.20",
     "Shipping                 $9.80", "Total due            $158.00"],
    ["Minutes of the harbour committee", "Present: A. Ward, K. Osei, M. Lind",
     "1. The north slip reopens on Monday.", "2. Dredging quotes are due by Friday."],
    ["Recipe: seed bread", "500 g flour, 350 ml water, 10 g salt", "Mix, rest 40 minutes, fold twice,",
     "bake at 230 C for 35 minutes."],
]


def render_demo_page(lines: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=30)
    image = Image.new("RGB", (1100, 120 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 60 * index), line, fill="black", font=font)
    return image


def ensure_demo_project(stdout: TextIO):
    """On a database without projects, create the demo project; return it (or None)."""
    from projects.models import Project
    from users.models import User

    from marker_ls_plugin.domain.presets import create_ocr_project
    from marker_ls_plugin.models import ProjectConfig

    owner = User.objects.filter(is_superuser=True).order_by("id").first()
    if owner is None or Project.objects.exists():
        return None
    use_surya, reason = surya_weights()
    engine = "surya" if use_surya else "rapidocr"
    project = create_ocr_project(owner, DEMO_TITLE, description=f"Pre-annotated with {engine}: {reason}.")
    ProjectConfig.objects.filter(project=project).update(engine=engine)
    import_pages(project, owner)
    print(f"Created the demo project \"{DEMO_TITLE}\" (id {project.pk}) with {len(PAGES)} pages; "
          f"pre-annotating with {engine}: {reason}.", file=stdout)
    return project


def import_pages(project, user) -> list[int]:
    """Import the demo pages as ``user`` uploading PNG files; return the new tasks' ids.

    Label Studio's own import functions do it, as for a user's upload: a ``FileUpload`` row per file (which
    ``/data/upload/...`` needs to serve it), tasks that point to their upload, the project's counters, and the
    import hook that queues pre-annotation. ``async_import_background`` is the import behind ``ImportAPI``
    (run here in this process), so no request object has to be made up.
    """
    from data_import.functions import async_import_background
    from data_import.uploader import create_file_uploads
    from django.core.files.uploadedfile import SimpleUploadedFile
    from projects.models import ProjectImport

    files = {}
    for number, lines in enumerate(PAGES, start=1):
        buffer = io.BytesIO()
        render_demo_page(lines).save(buffer, format="PNG")
        name = f"demo-page-{number}.png"
        files[name] = SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")
    upload_ids, _ = create_file_uploads(user, project, files)
    project_import = ProjectImport.objects.create(project=project, file_upload_ids=upload_ids, commit_to_project=True,
                                                   return_task_ids=True)
    async_import_background(project_import.id, user.id)
    project_import.refresh_from_db()
    if project_import.status != ProjectImport.Status.COMPLETED:
        raise RuntimeError(f"Label Studio could not import the demo pages: {project_import.error}")
    return project_import.task_ids
