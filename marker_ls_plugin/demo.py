"""The first-start demo: an OCR project from the preset with a few generated pages, pre-annotated."""

from __future__ import annotations

import io
import json
import os
from typing import TextIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from marker_ls_plugin.conf import get_config

DEMO_TITLE = "Marker OCR demo"
# surya-ocr 0.17.1's default checkpoints, as its downloader lays them out in its cache.
SURYA_DEFAULTS = ("text_recognition/2025_09_23", "text_detection/2025_05_07")
PAGES = [
    ["Invoice 2026-0117", "Date: 25 November 2026", "Widgets, blue (x12)   $148.20",
     "Shipping                 $9.80", "Total due            $158.00"],
    ["Minutes of the harbour committee", "Present: A. Ward, K. Osei, M. Lind",
     "1. The north slip reopens on Monday.", "2. Dredging quotes are due by Friday."],
    ["Recipe: seed bread", "500 g flour, 350 ml water, 10 g salt", "Mix, rest 40 minutes, fold twice,",
     "bake at 230 C for 35 minutes."],
]


def surya_weights() -> tuple[bool, str]:
    """Whether surya's weights are on this machine, and where they were looked for (no torch import)."""
    config = get_config()
    local = [config["SURYA_RECOGNITION_CHECKPOINT"], config["SURYA_DETECTION_CHECKPOINT"]]
    if all(path and os.path.isfile(os.path.join(path, "config.json")) for path in local):
        return True, "SURYA_RECOGNITION_CHECKPOINT and SURYA_DETECTION_CHECKPOINT are local model directories"
    cache = settings.SURYA_MODEL_CACHE_DIR or _default_surya_cache()
    missing = [name for name in SURYA_DEFAULTS if not _manifest_complete(os.path.join(cache, name))]
    if not missing:
        return True, f"surya's default weights are in its cache ({cache})"
    return False, (f"surya's weights are not on this machine (looked in {cache} for {', '.join(missing)}, and "
                   "SURYA_*_CHECKPOINT is unset); rapidocr, which ships its models, pre-annotates instead")


def _default_surya_cache() -> str:
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("datalab"), "models")


def _manifest_complete(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "manifest.json")) as handle:
            files = json.load(handle)["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all(os.path.exists(os.path.join(directory, name)) for name in files)


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
    from tasks.models import Task
    from users.models import User

    from marker_ls_plugin.models import ProjectConfig
    from marker_ls_plugin.presets import create_ocr_project

    owner = User.objects.filter(is_superuser=True).order_by("id").first()
    if owner is None or Project.objects.exists():
        return None
    use_surya, reason = surya_weights()
    engine = "surya" if use_surya else "rapidocr"
    project = create_ocr_project(owner, DEMO_TITLE, description=f"Pre-annotated with {engine}: {reason}.")
    ProjectConfig.objects.filter(project=project).update(engine=engine)
    for number, lines in enumerate(PAGES, start=1):
        buffer = io.BytesIO()
        render_demo_page(lines).save(buffer, format="PNG")
        path = default_storage.save(f"upload/{project.pk}/demo-page-{number}.png", ContentFile(buffer.getvalue()))
        Task.objects.create(project=project, data={"image": f"{settings.MEDIA_URL.rstrip('/')}/{path}"})
    print(f"Created the demo project \"{DEMO_TITLE}\" (id {project.pk}) with {len(PAGES)} pages; "
          f"pre-annotating with {engine}: {reason}.", file=stdout)
    return project
