"""Components called through `.python_func`, as kfp would call them, with real artifact objects."""

import pytest
from kfp.dsl import Dataset

from cnnops.artifacts import read_manifest
from cnnops.config import build_config, to_pipeline_parameter
from components.ingest import ingest
from components.split import split


def test_ingest_and_split_components(make_images, state_home, tmp_path):
    config = to_pipeline_parameter(build_config(overrides={"data.source": str(make_images(per_class=20))}))
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    assert ingest.python_func(config=config, dataset=dataset) == 60
    assert dataset.metadata["n_images"] == 60 and dataset.metadata["classes"] == ["cross", "disc", "stripes"]
    outputs = {name: Dataset(uri=str(tmp_path / name)) for name in ("train", "val", "test")}
    split.python_func(
        config=config, dataset=dataset, train_data=outputs["train"], val_data=outputs["val"], test_data=outputs["test"]
    )
    assert {name: a.metadata["n_images"] for name, a in outputs.items()} == {"train": 48, "val": 6, "test": 6}
    assert len(read_manifest(tmp_path / "test")) == 6


def test_component_turns_user_error_into_one_line_exit(state_home, tmp_path, capsys):
    config = to_pipeline_parameter(build_config(overrides={"data.source": str(tmp_path / "missing")}))
    with pytest.raises(SystemExit) as exit_info:
        ingest.python_func(config=config, dataset=Dataset(uri=str(tmp_path / "dataset")))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnops: error: data source") and "\n" not in err


def test_component_rejects_unknown_config_key(state_home, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ingest.python_func(config={"trian": {}}, dataset=Dataset(uri=str(tmp_path / "dataset")))
    assert "unknown key 'trian'" in capsys.readouterr().err
