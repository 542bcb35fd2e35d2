"""The GitHub workflows: actionlint finds nothing in any of them, every marketplace action they use
has a local stand-in (act cannot fetch one here), and act runs retrain.yml's wiring on this
machine without training: each trigger's request resolved, and a refused request carried through
the retrain job to its outputs, job summary and artifacts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from act import ACT, WORKFLOWS, dispatch, run_act
from conftest import CNNOPS

BIN = Path(sys.executable).parent
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))


def uses_of(workflow: Path) -> set[str]:
    """Every `uses:` of a workflow's steps."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return {step["uses"] for job in jobs.values() for step in job.get("steps", []) if "uses" in step}


def actionlint(*workflows: Path) -> subprocess.CompletedProcess[str]:
    """actionlint as `make lint` runs it: with the dev group's shellcheck on every `run:` script."""
    command = [str(BIN / "actionlint"), "-shellcheck", str(BIN / "shellcheck"), "-pyflakes="]
    return subprocess.run(command + [str(p) for p in workflows], capture_output=True, text=True, timeout=60)


def test_actionlint_finds_nothing_in_any_workflow(tmp_path):
    assert {p.name for p in WORKFLOW_FILES} >= {"ci.yml", "retrain.yml"}
    checked = actionlint(*WORKFLOW_FILES)
    assert checked.returncode == 0 and checked.stdout == "", checked.stdout + checked.stderr

    # The same check finds a script's unquoted variable: the `run:` scripts are shellchecked.
    sloppy = tmp_path / "sloppy.yml"
    sloppy.write_text("on: push\njobs:\n  one:\n    runs-on: ubuntu-latest\n    steps:\n      - run: ls $HOME/*.txt\n")
    found = actionlint(sloppy)
    assert found.returncode == 1 and "SC2086" in found.stdout, found.stdout + found.stderr


def test_every_marketplace_action_has_a_local_stand_in():
    stand_ins = dict(re.findall(r'"([\w.-]+/[\w.-]+@[\w.-]+)=\$here/(actions/[\w-]+)"', ACT.read_text()))
    assert stand_ins, "infra/ci/act names no stand-ins"
    for folder in stand_ins.values():
        assert (ACT.parent / folder / "action.yml").is_file(), folder
    for workflow in WORKFLOW_FILES:
        for uses in uses_of(workflow):
            # act copies the work tree itself for actions/checkout (no --no-skip-checkout).
            assert uses.startswith("actions/checkout@") or uses in stand_ins, f"{workflow.name}: {uses} has no stand-in"


def test_each_trigger_resolves_its_request(tmp_path):
    inputs = dispatch(data="/data/flowers", model_name="flowers", force="true", runner="docker", settings="a.b=1 c.d=2")
    by_hand = run_act("workflow_dispatch", inputs, tmp_path / "dispatch", job="plan")
    assert by_hand.result("plan") == "success", by_hand.describe()
    assert by_hand.outputs("plan") == {
        "data": "/data/flowers",
        "model": "flowers",
        "force": "true",
        "runner": "docker",
        "require_promotion": "false",
        "config": "",
        "settings": "a.b=1 c.d=2",
        "group": "flowers",
    }
    assert "Retrain requested by `workflow_dispatch`" in by_hand.summary("plan")

    alert = {"action": "retrain", "client_payload": {"data": "/data/pets", "force": True, "reason": "drift"}}
    relayed = run_act("repository_dispatch", alert, tmp_path / "relay", job="plan")
    assert relayed.result("plan") == "success", relayed.describe()
    plan = relayed.outputs("plan")
    assert (plan["data"], plan["model"], plan["force"], plan["runner"]) == ("/data/pets", "", "true", "subprocess")
    assert plan["group"] == "/data/pets"  # no model name: the source it is derived from
    assert "(drift)" in relayed.summary("plan")

    nightly = run_act("schedule", {}, tmp_path / "nightly", job="plan", variables={"CNNOPS_MODEL_NAME": "pets"})
    assert nightly.result("plan") == "success", nightly.describe()
    plan = nightly.outputs("plan")
    assert (plan["data"], plan["model"], plan["force"]) == ("data/manifest.csv", "pets", "false")


def test_a_refused_request_fails_the_job_with_its_one_line_error_in_the_summary_and_artifacts(tmp_path):
    gone = tmp_path / "gone"
    state = tmp_path / "state"
    run = run_act(
        "workflow_dispatch",
        dispatch(data=str(gone), model_name="wiring", force="false", runner="subprocess"),
        tmp_path / "act",
        variables={"CNNOPS_BIN": str(CNNOPS), "CNNOPS_HOME": str(state)},
    )
    assert run.returncode != 0 and run.result("plan") == "success", run.describe()
    assert run.result("retrain") == "failure", run.describe()
    outputs = run.outputs("retrain")
    assert (outputs["trained"], outputs["decision"], outputs["reason"]) == ("false", "failed", "error")
    assert "does not exist" in outputs["detail"] and "\n" not in outputs["detail"]
    assert f"**Error:** {outputs['detail']}" in run.summary("retrain")
    decision = json.loads((run.artifacts / "retrain-decision" / "decision.json").read_text())
    assert decision["outcome"] == "failure" and decision["decision"] == "failed" and decision["model"] == "wiring"
    assert decision["event"] == "workflow_dispatch" and decision["data"] == str(gone)
    assert "failed" in (run.artifacts / "retrain-decision" / "report.md").read_text()
    assert Path(outputs["report"]).is_relative_to(state)  # the report is in the state folder asked for
    assert not gone.exists()
