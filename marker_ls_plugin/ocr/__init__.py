"""OCR engines, image reading, and model output turned into Label Studio results."""
