"""Public entry point of the fine-tuning export (no torch): ``export_annotations_for_finetuning``."""

from marker_ls_plugin.dataset.export import export_annotations_for_finetuning, load_hf_dataset, split_of

__all__ = ["export_annotations_for_finetuning", "load_hf_dataset", "split_of"]
