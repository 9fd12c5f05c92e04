"""Training arguments: defaults, JSON round trip, and clear errors."""

import pytest

from marker_ls_plugin.training.config import TrainingArguments


def test_round_trip_through_json_dict():
    arguments = TrainingArguments(learning_rate=1e-4, max_steps=50, freeze=["vision_encoder", "lm_head"])
    assert TrainingArguments.from_dict(arguments.to_dict()) == arguments


def test_every_field_documents_itself():
    import dataclasses

    for field in dataclasses.fields(TrainingArguments):
        assert field.metadata.get("help"), field.name


@pytest.mark.parametrize(("data", "message"), [
    ({"epochs": 3}, "unknown training arguments: epochs"),
    ({"learning_rate": 0}, "learning_rate must be positive"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"per_device_train_batch_size": 0}, "batch size"),
])
def test_bad_arguments_are_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        TrainingArguments.from_dict(data)
