"""Training arguments: defaults, JSON round trip, and clear errors naming the argument."""

import dataclasses
import math

import pytest
from mls_helpers import ROOT

from marker_ls_plugin.training import config, surgery
from marker_ls_plugin.training.config import InvalidTrainingArguments, TrainingArguments
from marker_ls_plugin.training.surgery import FREEZE_GROUPS

README = (ROOT / "README.md").read_text()


def test_round_trip_through_json_dict():
    arguments = TrainingArguments(learning_rate=1e-4, max_steps=50, freeze=["vision_encoder", "lm_head"])
    assert TrainingArguments.from_dict(arguments.to_dict()) == arguments


def test_every_field_documents_itself():
    for field in dataclasses.fields(TrainingArguments):
        assert field.metadata.get("help"), field.name


def test_readme_shows_what_each_argument_accepts():
    for name, accepted in TrainingArguments.rules().items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row and row.split("|")[3].strip() == accepted, (name, accepted)


def test_the_loop_freezes_the_groups_the_arguments_accept():
    assert config.FREEZE_GROUPS is surgery.FREEZE_GROUPS  # one definition, in surgery.py beside apply_freeze
    [freeze] = [f for f in dataclasses.fields(TrainingArguments) if f.name == "freeze"]
    assert freeze.metadata["rule"].choices == tuple(FREEZE_GROUPS)


@pytest.mark.parametrize(("data", "message"), [
    ({"epochs": 3}, "unknown training arguments: epochs"),
    ({"learning_rate": 0}, "learning_rate must be positive"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be at least 1"),
    ({"learning_rate": "abc"}, "learning_rate must be a number, got 'abc'"),
    ({"freeze": "vision_encoder"}, "freeze must be a list of parameter groups"),
    ({"labels": "Text"}, "labels must be a non-empty list of region labels or null, got 'Text'"),
    ({"max_steps": True}, "max_steps must be an integer or null, got True"),
])
def test_bad_arguments_are_rejected_with_a_clear_message(data, message):
    with pytest.raises(ValueError, match=message):
        TrainingArguments.from_dict(data)


# Every argument: values of the wrong type (a bool is not a number) and values just out of range.
BAD = {
    "learning_rate": ["abc", None, True, 0, -1e-5, 1.5, math.nan, math.inf],
    "num_train_epochs": [None, "3", False, 0, 1e308, 1001],
    "max_steps": [True, 1e20, 2.5, "10", 0, 10**6 + 1, 10**20],
    "per_device_train_batch_size": [2.5, 1e9, 10**9, True, 0, 1025, None],
    "gradient_accumulation_steps": [1.5, True, 0, 1025],
    "warmup_ratio": [-0.1, 1, "0.1", None],
    "weight_decay": [-0.01, 1.01, False],
    "mixed_precision": ["fp8", None, True, ["bf16"]],
    "gradient_checkpointing": [1, "true", None],
    "eval_steps": [0, 1.0, False, 10**9],
    "early_stopping_patience": [0, True, 2.5, 1001],
    "val_fraction": [0, 1, -0.5, "0.1", None],
    "split_seed": [-1, 2**32, 1.5, "x", True],
    "labels": ["Text", [], [""], [1], {"Text": 1}],
    "max_grad_norm": [-1, 0, 1e9, math.nan, "1"],
    "seed": ["x", -1, 2**32, 0.5, None, False],
    "freeze": ["vision_encoder", ["encoder"], [None], None, {"decoder": True}],
    "eval_batch_size": [0, 1e9, 10**9, 8.0, True],
    "dataloader_num_workers": [-1, 65, 1.0, True, None],
}
BAD_CASES = [(name, value) for name, values in BAD.items() for value in values]


def test_every_argument_has_bad_values_under_test():
    assert set(BAD) == {field.name for field in dataclasses.fields(TrainingArguments)}


@pytest.mark.parametrize(("name", "value"), BAD_CASES, ids=[f"{n}={v!r}" for n, v in BAD_CASES])
def test_every_argument_is_checked_for_type_and_range(name, value):
    with pytest.raises(InvalidTrainingArguments) as error:
        TrainingArguments.from_dict({name: value})
    assert list(error.value.errors) == [name]
    assert str(error.value).startswith(f"{name} ")


GOOD = {
    "learning_rate": [1e-8, 1, 1.0],
    "num_train_epochs": [0.5, 1000],
    "max_steps": [None, 1, 10**6],
    "per_device_train_batch_size": [1, 1024],
    "gradient_accumulation_steps": [1, 1024],
    "warmup_ratio": [0, 0.99],
    "weight_decay": [0, 1],
    "mixed_precision": ["auto", "bf16", "fp16", "no"],
    "gradient_checkpointing": [True, False],
    "eval_steps": [None, 1, 10**6],
    "early_stopping_patience": [None, 1, 1000],
    "val_fraction": [0.01, 0.99],
    "split_seed": [0, 2**32 - 1],
    "labels": [None, ["Text"], ["Text", "Handwriting"]],
    "max_grad_norm": [0.1, 1000],
    "seed": [0, 2**32 - 1],
    "freeze": [[], list(FREEZE_GROUPS)],
    "eval_batch_size": [None, 1, 1024],
    "dataloader_num_workers": [0, 64],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in GOOD.items() for v in values])
def test_values_at_the_bounds_are_accepted(name, value):
    arguments = TrainingArguments.from_dict({name: value})
    assert getattr(arguments, name) == value
    assert TrainingArguments.from_dict(arguments.to_dict()) == arguments


def test_every_bad_argument_is_named_at_once_and_numbers_are_normalised():
    with pytest.raises(InvalidTrainingArguments) as error:
        TrainingArguments.from_dict({"seed": -1, "warmup_ratio": 1, "freeze": ["encoder"], "learning_rate": 1e-4})
    assert sorted(error.value.errors) == ["freeze", "seed", "warmup_ratio"]
    assert "known: vision_encoder, decoder" in error.value.errors["freeze"]
    assert isinstance(TrainingArguments.from_dict({"learning_rate": 1}).learning_rate, float)


@pytest.mark.parametrize("data", [[], "max_steps=3", 5, [("max_steps", 3)]])
def test_arguments_must_be_a_json_object(data):
    with pytest.raises(InvalidTrainingArguments, match="training arguments must be a JSON object"):
        TrainingArguments.from_dict(data)


def test_python_callers_are_checked_too():
    with pytest.raises(InvalidTrainingArguments, match="max_grad_norm must be positive"):
        dataclasses.replace(TrainingArguments(), max_grad_norm=-1)
