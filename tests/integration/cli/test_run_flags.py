"""`cnnops run`'s typed-parameter flags reach the config the pipeline resolves: a bad value is one
line before any task starts, and a sentinel ("unset") value cannot be passed by mistake."""

import os
import subprocess

from support.commands import CNNOPS


def run(state_home, *args):
    return subprocess.run(
        [str(CNNOPS), "run", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )


def test_typed_flags_are_checked_as_config_keys_before_the_pipeline(make_images, state_home):
    done = run(state_home, "--data", str(make_images(per_class=10)), "--architecture", "alexnet", "--seed", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cnnops: error: invalid config: train.architecture: Input should be ")
    assert not (state_home / "pipeline-root").exists()  # no task ran
    # 0 means "unset" to the pipeline, so the flags refuse it rather than fall back to a default.
    zero = run(state_home, "--epochs", "0")
    assert zero.returncode == 2 and "--epochs" in zero.stderr and "Invalid value" in zero.stderr
