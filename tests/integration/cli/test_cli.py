"""The command line on bad input: one line naming the problem and the fix, exit 2, no traceback,
nothing registered, the source untouched."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import snapshot

CNNOPS = Path(sys.executable).parent / "cnnops"


def cnnops(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnops: error: ")
    for phrase in phrases:
        assert phrase in last


def assert_nothing_registered(home: Path) -> None:
    status = cnnops("status", home=home)
    assert status.returncode == 0 and "no registered models yet" in status.stdout


def missing_path(tmp_path: Path, make_images) -> str:
    return str(tmp_path / "nope")


def empty_folder(tmp_path: Path, make_images) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


def one_class_only(tmp_path: Path, make_images) -> str:
    return str(make_images(per_class=12, classes=("disc",)))


def class_too_small_for_the_split(tmp_path: Path, make_images) -> str:
    root = make_images(per_class=12)
    for extra in sorted((root / "cross").iterdir())[4:]:
        extra.unlink()
    return str(root)


def unknown_demo(tmp_path: Path, make_images) -> str:
    return "demo:unicorns"


def preflight_refusal(data: str, home: Path) -> str:
    """What `cnnops run --data DATA` refuses before any task, from the calls it makes (the config
    resolved, then `prepare_local_run`: the run's plan and its preflight), made in this process:
    the message it prints after `cnnops: error: `."""
    from cnnops.cli import prepare_local_run, resolve_config
    from cnnops.core.errors import CnnopsError
    from cnnops.core.runlog import RunLog

    with pytest.raises(CnnopsError) as refused:
        prepare_local_run(RunLog(home / "logs" / "run-preflight.log"), resolve_config(None, None), data_source=data)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


# The refusals of a bad --data that preflight makes, with the phrases each one line must hold.
PREFLIGHT_REFUSALS = [
    pytest.param(missing_path, ("does not exist", "one subfolder per class"), id="missing-path"),
    pytest.param(empty_folder, ("is empty", "one subfolder per class"), id="empty-folder"),
    pytest.param(one_class_only, ("one class only", "at least two class subfolders"), id="one-class-only"),
    pytest.param(class_too_small_for_the_split, ("'cross' has 4", "needs at least 10"), id="class-too-small"),
    pytest.param(unknown_demo, ("unknown demo dataset 'demo:unicorns'", "demo:animals"), id="unknown-demo"),
]


@pytest.mark.parametrize(("make_source", "phrases"), PREFLIGHT_REFUSALS)
def test_preflight_refuses_bad_data_with_one_line(make_source, phrases, make_images, state_home, tmp_path):
    message = preflight_refusal(make_source(tmp_path, make_images), state_home)
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.slow
def test_cnnops_run_says_a_preflight_refusal_in_one_line_and_exits_2(make_images, state_home, tmp_path):
    """The CLI around those calls, once for real: the refusal is one line, exit status 2, no
    traceback, the same message the calls raise."""
    data = class_too_small_for_the_split(tmp_path, make_images)
    result = cnnops("run", "--data", data, home=state_home)
    assert_one_line_error(result, "'cross' has 4", "needs at least 10")
    assert result.stderr.strip().splitlines()[-1] == f"cnnops: error: {preflight_refusal(data, state_home)}"


def test_unknown_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epoch: 3\n")
    assert_one_line_error(cnnops("run", "--config", str(config), home=tmp_path / "state"), "unknown key 'train.epoch'")
    assert_one_line_error(cnnops("run", "--set", "gate.margn=0.1", home=tmp_path / "state"), "unknown key 'gate.margn'")


@pytest.mark.pipeline
def test_no_decodable_image_stops_the_pipeline(tmp_path):
    source = tmp_path / "junk"
    for label in ("a", "b"):
        (source / label).mkdir(parents=True)
        for index in range(10):
            (source / label / f"{index}.jpg").write_text("these bytes are not a picture")
    before = snapshot(source)
    home = tmp_path / "state"
    result = cnnops("run", "--data", str(source), home=home)
    assert_one_line_error(result, "no decodable image", "nothing was registered")
    assert_nothing_registered(home)
    assert snapshot(source) == before


@pytest.mark.pipeline
def test_a_failing_validation_stops_the_pipeline_before_training(make_images, tmp_path):
    source = make_images(per_class=12)
    home = tmp_path / "state"
    result = cnnops("run", "--data", str(source), "--set", "validation.min_images_per_class=50", home=home)
    assert_one_line_error(result, "failed validation", "each class needs 50", "report.html")
    assert_nothing_registered(home)
    pipeline_root = home / "pipeline-root"
    assert list(pipeline_root.rglob("validate/validated/report.html"))  # the reason, left for the user
    assert not list(pipeline_root.rglob("train"))  # training never started


def test_step_commands_share_the_error_path(tmp_path):
    result = cnnops("split", "--dataset", str(tmp_path), "--out", str(tmp_path / "s"), home=tmp_path / "state")
    assert_one_line_error(result, "no manifest.parquet")


@pytest.mark.slow
def test_step_commands_chain_to_a_champion(make_images, tmp_path):
    source, work, home = make_images(per_class=20), tmp_path / "work", tmp_path / "state"
    steps = [
        ("ingest", "--data", str(source), "--out", str(work / "dataset")),
        ("split", "--dataset", str(work / "dataset"), "--out", str(work / "splits")),
        (
            "train",
            "--splits",
            str(work / "splits"),
            "--out",
            str(work / "model"),
            "--epochs",
            "8",
            "--set",
            "train.batch_size=16",
        ),
        (
            "evaluate",
            "--model",
            str(work / "model"),
            "--test",
            str(work / "splits" / "test"),
            "--out",
            str(work / "evaluation"),
        ),
        (
            "register",
            "--model",
            str(work / "model"),
            "--test",
            str(work / "splits" / "test"),
            "--evaluation",
            str(work / "evaluation"),
            "--set",
            "gate.floor=0",
        ),
    ]
    for step in steps:
        result = cnnops(*step, home=home)
        assert result.returncode == 0, f"{step[0]}: {result.stderr[-2000:]}"
    status = cnnops("status", home=home)
    assert "  champion   v1" in status.stdout
    assert "      v1  champion" in status.stdout and "no champion yet" in status.stdout


def test_preflight_makes_a_relative_source_absolute(make_images, tmp_path, monkeypatch):
    from cnnops.cli import preflight
    from cnnops.settings.config import build_config

    root = make_images(per_class=12)
    monkeypatch.chdir(root.parent)
    config = preflight(build_config(overrides={"data.source": root.name}))
    assert config.data.source == str(root.resolve())
