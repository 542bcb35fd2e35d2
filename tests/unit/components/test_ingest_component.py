"""components.ingest through `.python_func`, as kfp calls it, with real artifact objects; and the
one-line exit every component gives a user's error."""

import pytest
from kfp.dsl import Dataset

from cnnops.components.ingest import ingest
from cnnops.contracts.dataset import read_manifest
from cnnops.settings.config import build_config, to_pipeline_parameter


def test_ingest_counts_the_images_and_describes_the_dataset(make_images, state_home, tmp_path):
    config = to_pipeline_parameter(build_config(overrides={"data.source": str(make_images(per_class=20))}))
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    assert ingest.python_func(config=config, dataset=dataset) == 60
    assert dataset.metadata["n_images"] == 60 and dataset.metadata["classes"] == ["cross", "disc", "stripes"]
    assert dataset.metadata["n_quarantined"] == dataset.metadata["n_duplicates"] == 0
    assert len(dataset.metadata["fingerprint"]) == 64
    manifest = read_manifest(tmp_path / "dataset")
    assert len(manifest) == 60 and sorted(set(manifest["label"])) == ["cross", "disc", "stripes"]


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
