"""The records between steps: each is read back as written, and a missing, broken, foreign or
out-of-date file is one line naming it and the step that writes it again; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnops.contracts.dataset import DatasetInfo, read_dataset_info
from cnnops.contracts.model import (
    EarlyStoppingState,
    RunRecord,
    TrainingState,
    read_run_record,
    read_training_state,
    write_training_state,
)
from cnnops.contracts.records import write_record
from cnnops.core.atomic import is_complete, replace_atomically, write_folder_atomically
from cnnops.core.errors import CnnopsError

INFO = DatasetInfo(
    source="demo:shapes",
    origin="demo",
    classes=["cross", "disc"],
    class_counts={"cross": 3, "disc": 4},
    mode="RGB",
    height=16,
    width=16,
    n_images=7,
    fingerprint="ab" * 32,
)


def test_a_record_reads_back_as_written_nan_included(tmp_path):
    write_record(tmp_path / "dataset.json", INFO)
    assert read_dataset_info(tmp_path) == INFO
    state = TrainingState(
        run_id="r1",
        config={"seed": 1},
        fingerprint="f",
        history={"val_loss": [float("nan"), 0.5]},
        early_stopping=EarlyStoppingState(wait=1, best=float("inf"), best_epoch=1, stopped=False),
    )
    write_training_state(tmp_path / "progress.json", state)
    again = read_training_state(tmp_path / "progress.json")
    assert again.history["val_loss"][1] == 0.5 and again.history["val_loss"][0] != again.history["val_loss"][0]
    assert again.early_stopping == state.early_stopping


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"run.json is missing; run `cnnops train` on this folder first\.$"),
        ("{not json", r"run.json is not valid JSON \(.*\); run `cnnops train` again\.$"),
        ("[1, 2]", r"run.json holds a JSON list, not an object; run `cnnops train` again\.$"),
        ('{"schema_version": 99, "run_id": "x"}', r"run.json has schema version 99, this cnnops reads 1; run"),
        ('{"run_id": "x"}', r"run.json has schema version None, this cnnops reads 1; run `cnnops train` again\.$"),
        (
            '{"schema_version": 1, "run_id": "x"}',
            r"run.json does not hold a valid RunRecord \(experiment_id: Field required\); run `cnnops train` again\.$",
        ),
    ],
)
def test_an_unreadable_record_is_one_line_naming_the_file_and_the_step(tmp_path, content, message):
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(CnnopsError, match=message) as caught:
        read_run_record(tmp_path)
    assert str(tmp_path / "run.json") in str(caught.value) and "\n" not in str(caught.value)


def test_a_record_refuses_unknown_keys_and_is_frozen(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({**INFO.model_dump(), "colour": "blue"}))
    with pytest.raises(CnnopsError, match=r"not hold a valid DatasetInfo \(colour: Extra inputs are not permitted\)"):
        read_dataset_info(tmp_path)
    record = RunRecord(run_id="r", experiment_id="0", model_uri="m", model_id=None, registered_model="n")
    with pytest.raises(ValueError, match="frozen"):
        record.run_id = "other"  # type: ignore[misc]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def half_then_fail(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, half_then_fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    replace_atomically(target, lambda path: path.write_text("new"))
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_folder_is_in_place_whole_or_not_at_all(tmp_path):
    target = tmp_path / "tree"

    def fail(staging: Path) -> None:
        (staging / "a.png").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_folder_atomically(target, fail)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_folder_atomically(target, lambda staging: (staging / "a.png").write_bytes(b"x"))
    assert is_complete(target) and (target / "a.png").read_bytes() == b"x"
    assert target.stat().st_mode & 0o755 == 0o755  # readable by a container task's other user
