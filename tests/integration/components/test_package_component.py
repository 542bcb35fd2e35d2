"""components.package through `.python_func`, in a process of its own as a kfp task runs (BentoML
reads its store's location once per process), on a copy of the session's champion."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.stores import champion_copy

pytestmark = pytest.mark.slow  # uses the session's 12-epoch champion

CALL = """
import json, sys
from kfp.dsl import Artifact, Model
from components.package import package

bento = Artifact(uri=sys.argv[3])
tag = package.python_func(model=Model(uri=sys.argv[1]), evaluation=Artifact(uri=sys.argv[2]), bento=bento)
print(json.dumps({"tag": tag, "metadata": bento.metadata}))
"""


def test_package_builds_the_candidates_bento_and_exports_its_archive(champion, tmp_path):
    with champion_copy(champion, tmp_path / "copy") as copy:
        strong, home = copy["strong"], copy["work"] / "state"
        env = {**os.environ, "BENTOML_HOME": str(home / "bentoml")}
        done = subprocess.run(
            [sys.executable, "-c", CALL, str(strong["model"]), str(strong["evaluation"]), str(tmp_path / "bento")],
            env=env,
            cwd=Path(__file__).resolve().parents[3],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    name = strong["registered_model"]
    # Built before registration: named by the candidate's run, not by a version number.
    run = strong["run_id"][:12]
    assert result["tag"] == result["metadata"]["bento"] and result["tag"].startswith(f"cnnops:{name}-run-{run}-")
    assert result["metadata"]["registered_model"] == name
    assert (tmp_path / "bento" / "cnnops.bento").stat().st_size > 0
    assert any((home / "bentoml" / "bentos" / "cnnops").iterdir())
