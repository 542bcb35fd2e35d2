"""`cnnops retrain` refusing what it cannot do, as a CI job runs it: one line on stderr, exit 2,
nothing trained, and the job summary (when it can be written) carrying the error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.commands import CNNOPS
from support.images import write_images


def retrain(args: list[str], state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GITHUB_STEP_SUMMARY")}
    return subprocess.run(
        [str(CNNOPS), "retrain", *args],
        env={**variables, "CNNOPS_HOME": str(state), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.mark.slow  # three `cnnops retrain` processes
def test_bad_requests_are_one_line_exit_2_in_the_summary_and_nothing_trained(tmp_path):
    state = tmp_path / "state"
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    workflow = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}

    unknown = retrain(["--data", str(tmp_path), "--runner", "kubernetes"], state, **workflow)
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.splitlines() == [
        f"cnnops: error: --runner kubernetes is not one of subprocess, docker. (report {outputs(output)['report']})"
    ]
    assert "**Error:** --runner kubernetes is not one of subprocess, docker." in summary.read_text()
    assert outputs(output)["decision"] == "failed" and outputs(output)["trained"] == "false"

    summary.unlink()
    output.unlink()
    vanished = retrain(["--data", str(tmp_path / "gone")], state, **workflow)
    assert vanished.returncode == 2
    assert len(vanished.stderr.splitlines()) == 1 and "gone" in vanished.stderr, vanished.stderr
    assert "## cnnops retrain" in summary.read_text() and "gone" in summary.read_text()
    assert outputs(output)["reason"] == "error"

    source = write_images(tmp_path / "images", per_class=4)
    before = sorted(p.name for p in (source / "disc").iterdir())
    blocked = retrain(["--data", str(source)], state, GITHUB_STEP_SUMMARY=str(tmp_path / "no" / "such" / "summary.md"))
    assert blocked.returncode == 2
    assert blocked.stderr.splitlines() == [
        f"cnnops: error: GITHUB_STEP_SUMMARY is {tmp_path / 'no' / 'such' / 'summary.md'}, which cannot be "
        "written (No such file or directory); nothing was trained."
    ]
    assert not (state / "pipeline-root").exists()  # no pipeline ran
    assert sorted(p.name for p in (source / "disc").iterdir()) == before
    assert (state / "retrain").is_dir()  # the report is still kept in the state folder
