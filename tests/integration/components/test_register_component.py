"""components.register through `.python_func`, on a copy of the session's champion: the version
number it returns and the alias the gate's decision gave it."""

import pytest
from kfp.dsl import Artifact, Dataset, Model
from mlflow.tracking import MlflowClient
from support.stores import champion_copy
from support.training import gate_the_champion_against_itself

from cnnops.components.register import register

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion


def test_register_adds_a_version_under_the_decided_alias(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        strong, name = copy["strong"], copy["strong"]["registered_model"]
        alias, decision = gate_the_champion_against_itself(copy, tmp_path, {"gate": {"force_promote": True}})
        version = register.python_func(
            config={"gate": {"force_promote": True}},
            model=Model(uri=str(strong["model"])),
            test_data=Dataset(uri=str(strong["test"])),
            evaluation=Artifact(uri=str(strong["evaluation"])),
            baselines=Artifact(uri=str(tmp_path / "baselines")),
            decision=decision,
            validation=Artifact(uri=str(copy["validation_dir"])),
        )
        client = MlflowClient()
        assert alias == "champion" and version == 2
        assert int(client.get_model_version_by_alias(name, "champion").version) == 2
        assert client.get_model_version(name, "2").run_id == strong["run_id"]
    # The shared champion's own store is untouched.
    shared = MlflowClient(tracking_uri=f"sqlite:///{champion['work'] / 'state' / 'mlflow' / 'mlflow.db'}")
    assert int(shared.get_model_version_by_alias(name, "champion").version) == 1
