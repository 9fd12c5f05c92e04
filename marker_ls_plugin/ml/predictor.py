"""The predictor: which engine and checkpoints read a project's pages, and the model_version they write.

One type for every caller: pre-annotation's model choice (``domain.projects.model_choice``), the protocol's
``/predict``, the in-process connector and the standalone service. Plain data, no Django (the standalone
service imports it): each caller loads its engine its own way (``domain.engines.get_engine`` in-process,
with the plugin's settings; ``ocr.pool.get_engine`` in the standalone service).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Predictor:
    """An engine with its options, the model_version its predictions carry, and why this one.

    ``automatic``: the engine is the "auto" engine's decision for this process (domain.engines.auto_engine).
    ``reason``: why this model reads the project (the project's OCR page shows it).
    """

    version: str
    engine: str
    options: dict[str, Any] = field(default_factory=dict)
    automatic: bool = False
    reason: str = ""


def base_version(engine: str) -> str:
    """The model_version of an engine with its default checkpoints."""
    return f"marker-{engine}-base"
