"""The default function a fine-tune run executes on a worker: export, train, evaluate, save, register, activate.

The Django side of fine-tuning; the loop itself (training/loop.py) knows nothing of Django. The run stops through
its context's TrainingControl (domain/execution.py): the loop checks it between steps, this function between its
own phases.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from marker_ls_plugin.conf import get_config
from marker_ls_plugin.dataset.export import export_annotations_for_finetuning
from marker_ls_plugin.domain.activation import activate_model
from marker_ls_plugin.domain.engines import resolve_surya_checkpoint
from marker_ls_plugin.domain.projects import model_checkpoint
from marker_ls_plugin.domain.registry import register_model_dir
from marker_ls_plugin.ocr.surya import SuryaEngine
from marker_ls_plugin.training import loop, model_dir
from marker_ls_plugin.training.data import Line

logger = logging.getLogger(__name__)


class _RunCallbacks(loop.Callbacks):
    """The loop's callbacks written to the run: progress, metric history, log tail (and the user's cancel, read
    into the context's control at each write)."""

    def __init__(self, context: Any):
        self.context = context

    def on_step(self, step: int, total_steps: int, epoch: float, loss: float, learning_rate: float) -> None:
        # One write per step; the loss joins the metric history on the first step and every 10th.
        metrics = ({"phase": "train", "loss": round(loss, 5), "learning_rate": learning_rate}
                   if step == 1 or step % 10 == 0 else None)
        self.context.record(step=step, total_steps=total_steps, epoch=round(epoch, 3), metrics=metrics)

    def on_evaluate(self, step: int, metrics: dict[str, Any]) -> None:
        self.context.record(step=step, metrics=metrics)

    def log(self, message: str) -> None:
        logger.info("run %s: %s", self.context.run.pk, message)
        self.context.log(message)


def run_finetune(context: Any) -> None:
    """Fine-tune surya recognition for the run's project, starting from the run's base model.

    1. Export the project's annotations to ``<MODELS_DIR>/runs/<run>/dataset`` (the run's dataset snapshot;
       the split is fixed by ``split_seed``, so every run of a project validates on the same lines).
    2. Train and evaluate (training.loop): before and after metrics on the validation lines.
    3. Save to ``<MODELS_DIR>/recognition/<name>/`` atomically, then register the model (parent, run, dataset
       hash, metrics) in one transaction: a crash before leaves no registry row.
    4. Activate it for the project when it beats the starting model's validation CER by ACTIVATION_MARGIN
       (AUTO_ACTIVATE), which queues new predictions for tasks lacking one from it.
    """
    run, args, config = context.run, context.arguments, get_config()
    callbacks = _RunCallbacks(context)
    checkpoint = _base_checkpoint(run)
    name = f"project-{run.project_id}-run-{run.pk}"
    run_dir = Path(config["MODELS_DIR"]) / "runs" / str(run.pk)
    output = model_dir.recognition_dir(config["MODELS_DIR"]) / name
    if output.exists():
        raise FileExistsError(f"{output} already exists: move it away to re-run this run, or start a new run")

    callbacks.log(f"exporting project {run.project_id} to {run_dir / 'dataset'}")
    shutil.rmtree(run_dir / "dataset", ignore_errors=True)
    manifest = export_annotations_for_finetuning(
        run.project_id, str(run_dir / "dataset"), labels=args.labels, val_fraction=args.val_fraction,
        seed=args.split_seed, progress=_export_progress(context),
    )
    context.report(dataset=_dataset_summary(manifest, run_dir / "dataset"))
    callbacks.log(f"dataset {manifest['content_sha256'][:12]}: {manifest['counts']['train']} training and "
                  f"{manifest['counts']['val']} validation lines; skipped {sum(manifest['skipped_counts'].values())}")
    train_lines, val_lines = (_read_lines(run_dir / "dataset", split) for split in ("train", "val"))
    result = loop.train(checkpoint, train_lines, val_lines, args, None, callbacks, device=config["TORCH_DEVICE"],
                        reader=SuryaEngine.around, control=context.control)
    context.report(metrics={"phase": "after", **{k: result.after.metrics[k] for k in ("cer", "wer", "exact", "lines")},
                            "cer_before": result.before.metrics["cer"]})
    metadata = model_dir.ModelMetadata(
        name=name, parent=run.base_model.name if run.base_model else None, run=run.pk,
        dataset_sha256=manifest["content_sha256"], metrics=result.metrics(), base=checkpoint,
        arguments=args.to_dict(),
        description=f"Fine-tuned by run {run.pk} on project {run.project_id} from {checkpoint} "
                    f"({manifest['counts']['train']} training lines).")
    model_dir.save(result.foundation, output, metadata)  # atomic: the directory appears complete, metadata included
    try:
        # Registration and activation commit together, ordered against cancels by the run's row lock: a
        # cancelled run registers nothing, and a registered model's run cannot be cancelled any more.
        with context.committing():
            model, _ = register_model_dir(output, created_by=run.started_by,
                                          organization=run.project.organization_id)
            callbacks.log(f"registered {model.name}: validation CER {result.before.metrics['cer']} -> "
                          f"{result.after.metrics['cer']}")
            _maybe_activate(run, model, result, config, callbacks)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)  # never a model directory without its registry row
        raise


def _export_progress(context: Any) -> Any:
    def progress(tasks: int, lines: int) -> None:
        if tasks % 50 == 0:
            context.log(f"exported {tasks} tasks, {lines} lines")
            context.check()

    return progress


def _base_checkpoint(run: Any) -> str:
    """The checkpoint to start from: the run's base model, else the configured or default surya checkpoint."""
    base = run.base_model
    if base is not None and base.engine != "surya":
        raise ValueError(f"the base model {base.name} is a {base.engine} model; only surya recognition models "
                         f"can be fine-tuned: activate a surya model for the project first")
    checkpoint = model_checkpoint(base) if base is not None else None
    return resolve_surya_checkpoint(checkpoint or get_config()["SURYA_RECOGNITION_CHECKPOINT"])


def _read_lines(root: Path, split: str) -> list[Line]:
    with open(root / f"{split}.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Line(root / row["image"], row["text"], row["label"], f"{row['task']}:{row['region']}") for row in rows]


def _dataset_summary(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"path": str(path), "content_sha256": manifest["content_sha256"], "counts": manifest["counts"],
            "tasks": manifest["tasks"], "skipped_counts": manifest["skipped_counts"], "split": manifest["split"],
            "label_config_sha256": manifest["label_config_sha256"], "versions": manifest["versions"]}


def _maybe_activate(run: Any, model: Any, result: loop.TrainResult, config: dict[str, Any],
                    callbacks: loop.Callbacks) -> None:
    before, after = result.before.metrics["cer"], result.after.metrics["cer"]
    margin = float(config["ACTIVATION_MARGIN"])
    if not config["AUTO_ACTIVATE"]:
        callbacks.log(f"{model.name} is registered; AUTO_ACTIVATE is off, activate it from the dashboard or API")
    elif after is not None and before is not None and before - after >= margin:
        activate_model(run.project, model)
        callbacks.log(f"activated {model.name} for project {run.project_id} (CER {before} -> {after}, "
                      f"margin {margin}); unlabelled tasks get new predictions")
    else:
        callbacks.log(f"not activated: CER {before} -> {after} does not improve by the margin {margin}")
