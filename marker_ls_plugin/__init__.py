"""marker-ls-plugin: an OCR fine-tuning workbench inside Label Studio."""

__version__ = "0.1.0"
