"""The default function a fine-tune run executes on a worker."""

from __future__ import annotations

from typing import Any


def run_finetune(context: Any) -> None:
    """Fine-tune surya recognition for the run's project.

    The training loop is not part of this release; a run started now fails with this message
    rather than pretending to train.
    """
    raise NotImplementedError(
        "surya fine-tuning is not available in this version of marker-ls-plugin; "
        "set MARKER_LS['RUN_FUNCTION'] to your own training function meanwhile"
    )
