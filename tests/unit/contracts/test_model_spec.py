"""The model spec's one JSON form: what `to_json` writes, `from_json` reads back, wherever it is
kept (a model or served-model folder, a registered version's tag); a broken one is one line that
names where it came from."""

from __future__ import annotations

import json

import pytest

from cnnops.contracts.model import SPEC_SCHEMA, ModelSpec, read_model_spec, write_model_spec
from cnnops.core.errors import CnnopsError

SPEC = ModelSpec(["cross", "disc", "stripes"], 16, 16, "RGB", "simple-cnn")


def test_a_spec_reads_back_as_written(tmp_path):
    write_model_spec(tmp_path, SPEC)
    assert read_model_spec(tmp_path) == SPEC
    assert json.loads((tmp_path / "model_spec.json").read_text())["schema_version"] == SPEC_SCHEMA == 1
    assert ModelSpec.from_json(SPEC.to_json(), "a tag") == SPEC


def test_a_spec_without_a_version_reads_as_version_one():
    unversioned = {"class_names": ["a", "b"], "height": 8, "width": 8, "mode": "L", "architecture": "simple-cnn"}
    assert ModelSpec.from_json(json.dumps(unversioned), "a tag") == ModelSpec(["a", "b"], 8, 8, "L", "simple-cnn")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "does not hold a valid model spec"),
        ('{"class_names": ["a"], "height": 8, "width": 8, "mode": "L"}', "architecture: Field required"),
        ('{"class_names": "a", "height": "tall", "width": 8, "mode": "L", "architecture": "x"}', "valid"),
        (json.dumps({**json.loads(SPEC.to_json()), "schema_version": 2}), "schema version 2, this cnnops reads 1"),
    ],
)
def test_a_broken_spec_file_is_one_line_naming_it(tmp_path, text, words):
    (tmp_path / "model_spec.json").write_text(text)
    with pytest.raises(CnnopsError, match=words) as raised:
        read_model_spec(tmp_path)
    assert str(raised.value).startswith(str(tmp_path / "model_spec.json")) and "\n" not in str(raised.value)


def test_a_missing_spec_file_names_the_step_that_writes_it(tmp_path):
    with pytest.raises(CnnopsError, match=r"model_spec.json is missing; run `cnnops train`"):
        read_model_spec(tmp_path)
