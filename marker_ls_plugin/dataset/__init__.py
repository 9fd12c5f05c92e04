"""Annotations turned into fine-tuning data: line crops with their text, split and described (no torch)."""
