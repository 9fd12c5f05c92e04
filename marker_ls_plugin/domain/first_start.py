"""A fresh install's first start: the OCR project preset, the first admin user, and the demo project.

The preset is a Label Studio template (``ocr_template``, in the gallery under Create Project > Labeling Setup) and a
project factory (``create_ocr_project``, behind ``marker-ls project create`` and the demo). ``marker-ls start``
creates the first admin (``ensure_admin``) and, on a database without projects, the demo (``ensure_demo_project``).
"""

from __future__ import annotations

import io
import os
import secrets
from typing import TextIO

from data_import.functions import async_import_background
from data_import.uploader import create_file_uploads
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from organizations.models import Organization
from PIL import Image, ImageDraw, ImageFont
from projects.models import Project, ProjectImport
from users.models import User

from marker_ls_plugin.domain.engines import surya_weights
from marker_ls_plugin.models import ProjectConfig
from marker_ls_plugin.ocr.labeling import OCR_PRESET_CONFIG

# The preset

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
    with transaction.atomic():
        project = Project.objects.create(
            title=title, description=description, label_config=OCR_PRESET_CONFIG, created_by=user,
            organization=user.active_organization,
        )
        ProjectConfig.objects.get_or_create(project=project)
    return project


# The first admin

DEFAULT_ADMIN_EMAIL = "admin@localhost"


def legacy_token_policy() -> str:
    if settings.LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN:
        return "Legacy API tokens are enabled for new organizations (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)."
    return ("Legacy API tokens are off (Label Studio's default): use a Personal Access Token from "
            "Account & Settings, or set LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true before the first start.")


def ensure_admin(stdout: TextIO) -> None:
    """Create the first superuser and organization when the database has no user yet.

    Credentials come from LABEL_STUDIO_USERNAME / LABEL_STUDIO_PASSWORD (read by the settings
    module); otherwise a password is generated, printed once and kept in a 0600 file.
    """
    if User.objects.exists():
        print(legacy_token_policy(), file=stdout)
        return
    email = settings.MARKER_LS_FIRST_ADMIN_EMAIL or DEFAULT_ADMIN_EMAIL
    password = settings.MARKER_LS_FIRST_ADMIN_PASSWORD
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user = User.objects.create_user(email=email, password=password)
        user.is_staff = user.is_superuser = True
        organization = Organization.objects.first() or Organization.create_organization(
            created_by=user, title="Label Studio"
        )
        if organization.created_by_id != user.id:
            organization.add_user(user)
        user.active_organization = organization
        user.save()
    print(f"Created the first admin user: {email}", file=stdout)
    if generated:
        path = os.path.join(settings.BASE_DATA_DIR, "marker_ls", "first-admin.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(f"email: {email}\npassword: {password}\n")
        print(f"Generated password: {password}  (also in {path}; change it after logging in)", file=stdout)
    print(legacy_token_policy(), file=stdout)


# The demo project: an OCR project from the preset with a few generated pages, pre-annotated

DEMO_TITLE = "Marker OCR demo"
PAGES = [
    ["Invoice 2026-0117", "Date: 25 November 2026", "Widgets, blue (x12)   $148.20",
     "Shipping                 $9.80", "Total due            $158.00"],
    ["Minutes of the harbour committee", "Present: A. Ward, K. Osei, M. Lind",
     "1. The north slip reopens on Monday.", "2. Dredging quotes are due by Friday."],
    ["Recipe: seed bread", "500 g flour, 350 ml water, 10 g salt", "Mix, rest 40 minutes, fold twice,",
     "bake at 230 C for 35 minutes."],
]


def render_demo_page(lines: list[str]) -> Image.Image:
    font = ImageFont.load_default(size=30)
    image = Image.new("RGB", (1100, 120 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 60 * index), line, fill="black", font=font)
    return image


def ensure_demo_project(stdout: TextIO):
    """On a database without projects, create the demo project; return it (or None)."""
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
