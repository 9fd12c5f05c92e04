"""A model directory's metadata (one schema, read and written in training/model_dir.py), the models-directory
scanner the registry and the standalone backend share, and the training control."""

from __future__ import annotations

import json
import threading

import pytest

from marker_ls_plugin.training import model_dir
from marker_ls_plugin.training.control import CANCELLED, TIMEOUT, TrainingControl, TrainingStopped
from marker_ls_plugin.training.model_dir import InvalidMetadata, ModelMetadata


def write(path, data) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / model_dir.METADATA_FILE).write_text(data if isinstance(data, str) else json.dumps(data))


def test_metadata_round_trips_and_absent_is_none(tmp_path):
    metadata = ModelMetadata(name="m", parent="base", run=3, dataset_sha256="ab" * 32, metrics={"after": {}},
                             description="d", base="/ckpt", arguments={"max_steps": 1})
    write(tmp_path / "m", metadata.to_dict())
    assert model_dir.read_metadata(tmp_path / "m") == metadata
    assert model_dir.read_metadata(tmp_path / "none") is None


def test_an_older_file_reads_and_unknown_keys_are_ignored(tmp_path):
    # what loop.train(output_dir=) wrote before the schema was one
    write(tmp_path / "old", {"base": "/ckpt", "arguments": {}, "steps": 3, "best_step": 2, "before": {}, "after": {}})
    assert model_dir.read_metadata(tmp_path / "old") == ModelMetadata(base="/ckpt")


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "marker_ls_model.json is not readable JSON"),
    ([1, 2], "must hold a JSON object"),
    ({"metrics": [1, 2]}, "'metrics' has the wrong type (list)"),
    ({"run": True}, "'run' has the wrong type (bool)"),
    ({"name": None}, "'name' has the wrong type (NoneType)"),
    ({"dataset_sha256": "a" * 65}, "'dataset_sha256' is longer than 64 characters"),
])
def test_malformed_metadata_is_refused_with_the_reason(tmp_path, data, message):
    write(tmp_path / "bad", data)
    with pytest.raises(InvalidMetadata, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_dir.read_metadata(tmp_path / "bad")


def test_the_name_is_the_metadata_s_else_the_directory_s(tmp_path):
    write(tmp_path / "named", {"name": "from-metadata"})
    write(tmp_path / "broken", "{not json")
    write(tmp_path / "blank", {"name": ""})
    assert [model_dir.model_name(tmp_path / n) for n in ("named", "broken", "blank")] == [
        "from-metadata", "broken", "blank"]
    assert model_dir.model_name(tmp_path / "no-file") == "no-file"


def test_the_scanner_lists_visible_directories_sorted(tmp_path):
    assert model_dir.model_directories(tmp_path / "nowhere") == []
    recognition = tmp_path / "recognition"
    for name in ("b", "a", ".tmp-a-123"):
        (recognition / name).mkdir(parents=True)
    (recognition / "notes.txt").write_text("not a model")
    assert model_dir.model_directories(tmp_path) == [recognition / "a", recognition / "b"]


def test_the_control_keeps_the_first_reason_and_stops_on_check():
    control = TrainingControl()
    control.check()  # nothing to stop
    heartbeat = threading.Thread(target=control.stop, args=(CANCELLED,))  # as the run's heartbeat thread does
    heartbeat.start()
    heartbeat.join()
    control.stop(TIMEOUT)
    assert control.should_training_stop and control.reason == CANCELLED
    with pytest.raises(TrainingStopped) as stopped:
        control.check()
    assert stopped.value.reason == CANCELLED
