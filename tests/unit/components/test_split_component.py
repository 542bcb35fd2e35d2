"""components.split through `.python_func`, on a dataset the ingest component wrote."""

from kfp.dsl import Dataset
from support.training import component_config

from cnnops.components.ingest import ingest
from cnnops.components.split import split
from cnnops.contracts.dataset import read_manifest


def test_split_writes_three_disjoint_manifests(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=20))
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    ingest.python_func(config=config, dataset=dataset)
    outputs = {name: Dataset(uri=str(tmp_path / name)) for name in ("train", "val", "test")}
    split.python_func(
        config=config, dataset=dataset, train_data=outputs["train"], val_data=outputs["val"], test_data=outputs["test"]
    )
    assert {name: a.metadata["n_images"] for name, a in outputs.items()} == {"train": 48, "val": 6, "test": 6}
    manifests = {name: read_manifest(tmp_path / name) for name in outputs}
    assert {name: len(m) for name, m in manifests.items()} == {"train": 48, "val": 6, "test": 6}
    shas = [set(m["sha256"]) for m in manifests.values()]
    assert len(set.union(*shas)) == 60  # no image in two splits
    assert all(sorted(set(m["label"])) == ["cross", "disc", "stripes"] for m in manifests.values())
