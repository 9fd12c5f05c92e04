"""surya's checkpoints: which ones to load, whether their weights are on disk, and what to do when they are not.

No settings are read here: the plugin's models directory and surya's cache are passed in. Nothing here loads a
model; surya's settings (which import torch) are imported by the functions that need them.
"""

from __future__ import annotations

import json
import os

from marker_ls_plugin.ocr.availability import download_problem, first_line, network_reason
from marker_ls_plugin.ocr.types import EngineUnavailable

# surya-ocr 0.17.1's default checkpoints, as its downloader lays them out in its cache.
SURYA_DEFAULTS = {"recognition": "text_recognition/2025_09_23", "detection": "text_detection/2025_05_07"}
SURYA_SETTING = {"recognition": "SURYA_RECOGNITION_CHECKPOINT", "detection": "SURYA_DETECTION_CHECKPOINT"}
# The tokenizer files a recognition checkpoint directory holds next to its config.json and weights.
TOKENIZER_FILES = ("vocab_math.json", "specials.json", "specials_dict.json")


# --- what to do ----------------------------------------------------------------------------------------------------


def surya_fix(cache_dir: str, models_dir: str | None = None) -> str:
    """How to make surya's weights available, or to use RapidOCR instead (one paragraph, no Python syntax).

    ``cache_dir``: surya's MODEL_CACHE_DIR, looked in; ``models_dir``: the plugin's models directory (None: named
    by its setting).
    """
    recognition_dir = (f"{os.path.join(models_dir, 'recognition')}/" if models_dir
                       else "MARKER_LS_MODELS_DIR/recognition/")
    return (
        "What to do: switch the project to RapidOCR on its OCR page (one click; CPU, offline). "
        "Or give surya its weights: set MARKER_LS_SURYA_RECOGNITION_CHECKPOINT and "
        "MARKER_LS_SURYA_DETECTION_CHECKPOINT to local checkpoint directories (a recognition checkpoint directory "
        f"holds config.json, *.safetensors and the tokenizer files {', '.join(TOKENIZER_FILES)}), or set "
        "MODEL_CACHE_DIR to a copy of surya's cache (MODEL_CACHE_DIR/"
        f"{SURYA_DEFAULTS['recognition']}/ and {SURYA_DEFAULTS['detection']}/, each with its manifest.json; "
        f"looked in {cache_dir}); changing these environment variables needs a restart of Label Studio and its "
        f"workers. A recognition model needs no restart: put its checkpoint directory under {recognition_dir} "
        "(one directory per model, its name the model's), run "
        "`marker-ls models scan`, then pick the model on the project's OCR page (the detector's weights are still "
        "needed)."
    )


def surya_import_problem(exc: BaseException) -> str:
    return (f"surya cannot be imported ({type(exc).__name__}: {first_line(exc)}). Install it with "
            "pip install --no-deps surya-ocr==0.17.1 (README, Installation) and restart Label Studio and its "
            "workers, or switch the project to RapidOCR on its OCR page.")


# --- weights on disk -----------------------------------------------------------------------------------------------


def manifest_complete(directory: str) -> bool:
    """Whether a checkpoint downloaded by surya is complete: its manifest.json and every file it lists."""
    try:
        with open(os.path.join(directory, "manifest.json")) as handle:
            files = json.load(handle)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(os.path.exists(os.path.join(directory, name)) for name in files)


def surya_problem(options: dict, *, models_dir: str | None = None) -> str | None:
    """Why surya with ``options`` (its recognition and detection checkpoints) could not load here, with what to
    do; None when it could. Loads no model and downloads nothing: surya's settings are imported (with torch), its
    checkpoints are looked up on disk, and a missing default is checked for a reachable download host."""
    try:
        from surya.settings import settings  # deferred: surya's settings import torch
    except Exception as exc:  # a broken install fails in many ways, all of them "cannot be imported"
        return surya_import_problem(exc)
    defaults = {"recognition": settings.FOUNDATION_MODEL_CHECKPOINT, "detection": settings.DETECTOR_MODEL_CHECKPOINT}
    for kind, default in defaults.items():
        try:
            surya_checkpoint(options.get(f"{kind}_checkpoint"), default, kind, download=False, models_dir=models_dir)
        except EngineUnavailable as exc:
            return str(exc)
    return None


# --- resolving a checkpoint ----------------------------------------------------------------------------------------


def resolve_surya_checkpoint(checkpoint: str | None = None, *, download: bool = True,
                             models_dir: str | None = None) -> str:
    """A recognition checkpoint surya can load now (``None``: surya's default), or EngineUnavailable.

    ``download=False`` fetches nothing (web requests): a missing default passes when its host answers.
    """
    from surya.settings import settings  # deferred: surya's settings import torch

    return surya_checkpoint(checkpoint, settings.FOUNDATION_MODEL_CHECKPOINT, "recognition", download=download,
                            models_dir=models_dir)


def surya_checkpoint(checkpoint: str | None, default: str, kind: str, *, download: bool = True,
                     models_dir: str | None = None) -> str:
    """The checkpoint surya can load without a download, or EngineUnavailable saying what to do.

    ``s3://`` ids (surya's defaults) live in surya's MODEL_CACHE_DIR; a missing one is fetched once with surya's
    own downloader (no retries, unlike surya's loader which sleeps between three attempts), unless
    Hugging Face's offline mode (HF_HUB_OFFLINE=1) is on or its host does not answer. With ``download=False``
    nothing is fetched: a missing one passes when its download host answers (surya_problem). ``models_dir``
    (the plugin's models directory) is only named in the what-to-do text.
    """
    from huggingface_hub import constants  # deferred with surya: its settings import torch
    from surya.common.s3 import check_manifest, download_directory, join_urls  # deferred: surya, as above
    from surya.settings import settings  # deferred: surya, as above

    checkpoint = checkpoint or default
    if checkpoint.startswith("s3://"):
        remote = checkpoint.removeprefix("s3://")
        local = os.path.join(settings.MODEL_CACHE_DIR, remote)
        if check_manifest(local):
            return checkpoint
        missing = f"surya's {kind} weights ({checkpoint}) are not in surya's cache at {settings.MODEL_CACHE_DIR}"
        if constants.HF_HUB_OFFLINE:
            raise EngineUnavailable(f"{missing} and downloads are off (HF_HUB_OFFLINE). "
                                    f"{surya_fix(settings.MODEL_CACHE_DIR, models_dir)}")
        url = join_urls(settings.S3_BASE_URL, remote)
        problem = download_problem(url)  # offline, fail at once, before surya's downloader logs its raw error
        if download and not problem:
            os.makedirs(local, exist_ok=True)
            try:
                download_directory(remote, local)
            except Exception as exc:
                problem = network_reason(exc)
        if problem:
            raise EngineUnavailable(f"{missing} and could not be downloaded from {url}: {problem}. "
                                    f"{surya_fix(settings.MODEL_CACHE_DIR, models_dir)}")
        return checkpoint
    path = os.path.expanduser(checkpoint)
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise EngineUnavailable(f"surya's {kind} checkpoint {checkpoint} is not a checkpoint directory (no "
                                f"config.json there). Set MARKER_LS_{SURYA_SETTING[kind]} to a directory saved by "
                                "fine-tuning, or unset it for surya's default. "
                                f"{surya_fix(settings.MODEL_CACHE_DIR, models_dir)}")
    return path  # a directory, or a Hugging Face repo id for transformers
