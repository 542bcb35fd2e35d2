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
from support.act import ACT, WORKFLOWS, ActRun, dispatch, run_act
from support.commands import CNNOPS

BIN = Path(sys.executable).parent
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))


def uses_of(workflow: Path) -> set[str]:
    """Every `uses:` of a workflow's steps."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return {step["uses"] for job in jobs.values() for step in job.get("steps", []) if "uses" in step}


def errors_of(run: ActRun, job: str) -> list[str]:
    """The job's error annotations (`::error::` lines), as act's JSON log carries them."""
    return [r["arg"] for r in run.records if r.get("jobID") == job and r.get("command") == "error"]


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


# Where each trigger's drift URL comes from: the input, the payload, the schedule's variable.
INPUT_URL, PAYLOAD_URL, VARIABLE_URL = "http://input:3000", "http://payload:3000", "http://variable:3000"
DRIFT_VARIABLE = {"CNNOPS_DRIFT_URL": VARIABLE_URL}


def test_each_trigger_resolves_its_request(tmp_path):
    inputs = dispatch(
        data="/data/flowers",
        model_name="flowers",
        force="true",
        runner="docker",
        settings="a.b=1 c.d=2",
        if_drift=INPUT_URL,
    )
    # GitHub never sends a payload with a dispatch by hand; act does, to show the input comes first.
    inputs["client_payload"] = {"if_drift": PAYLOAD_URL}
    by_hand = run_act("workflow_dispatch", inputs, tmp_path / "dispatch", job="plan", variables=DRIFT_VARIABLE)
    assert by_hand.result("plan") == "success", by_hand.describe()
    assert by_hand.outputs("plan") == {
        "data": "/data/flowers",
        "model": "flowers",
        "force": "true",
        "runner": "docker",
        "require_promotion": "false",
        "config": "",
        "settings": "a.b=1 c.d=2",
        "if_drift": INPUT_URL,
        "group": "flowers",
    }
    assert "Retrain requested by `workflow_dispatch`" in by_hand.summary("plan")
    assert f"only if `{INPUT_URL}` reports drift" in by_hand.summary("plan")

    payload = {"data": "/data/pets", "force": True, "reason": "drift", "if_drift": PAYLOAD_URL}
    alert = {"action": "retrain", "client_payload": payload}
    relayed = run_act("repository_dispatch", alert, tmp_path / "relay", job="plan", variables=DRIFT_VARIABLE)
    assert relayed.result("plan") == "success", relayed.describe()
    plan = relayed.outputs("plan")
    assert (plan["data"], plan["model"], plan["force"], plan["runner"]) == ("/data/pets", "", "true", "subprocess")
    assert plan["if_drift"] == PAYLOAD_URL
    assert plan["group"] == "/data/pets"  # no model name: the source it is derived from
    assert "(drift)" in relayed.summary("plan")

    # A registry webhook's relay names no URL: it is not asked about drift, whatever the variable.
    webhook = {"action": "retrain", "client_payload": {"model": "pets", "reason": "champion alias deleted on v3"}}
    relayed = run_act("repository_dispatch", webhook, tmp_path / "webhook", job="plan", variables=DRIFT_VARIABLE)
    assert relayed.result("plan") == "success", relayed.describe()
    assert relayed.outputs("plan")["if_drift"] == ""
    assert "reports drift" not in relayed.summary("plan")

    variables = {"CNNOPS_MODEL_NAME": "pets", **DRIFT_VARIABLE}
    nightly = run_act("schedule", {}, tmp_path / "nightly", job="plan", variables=variables)
    assert nightly.result("plan") == "success", nightly.describe()
    plan = nightly.outputs("plan")
    assert (plan["data"], plan["model"], plan["force"]) == ("data/manifest.csv", "pets", "false")
    assert plan["if_drift"] == VARIABLE_URL  # the schedule asks the variable's service


def test_a_value_with_a_line_break_stops_the_plan(tmp_path):
    # A drift URL is passed to `cnnops retrain` and written to $GITHUB_OUTPUT: a second line could
    # add an output of its own.
    smuggled = f"{INPUT_URL}\nforce=true"
    run = run_act("workflow_dispatch", dispatch(if_drift=smuggled), tmp_path / "dispatch", job="plan")
    assert run.returncode != 0 and run.result("plan") == "failure", run.describe()
    assert errors_of(run, "plan") == [f"a retrain request's values are one line each; got: {INPUT_URL}..."]
    assert "if_drift" not in run.outputs("plan") and "force" not in run.outputs("plan")

    alert = {"action": "retrain", "client_payload": {"if_drift": smuggled}}
    relayed = run_act("repository_dispatch", alert, tmp_path / "relay", job="plan")
    assert relayed.returncode != 0 and relayed.result("plan") == "failure", relayed.describe()
    assert errors_of(relayed, "plan") == [f"a retrain request's values are one line each; got: {INPUT_URL}..."]

    # The schedule's variable is checked the same way.
    nightly = run_act("schedule", {}, tmp_path / "nightly", job="plan", variables={"CNNOPS_DRIFT_URL": smuggled})
    assert nightly.returncode != 0 and nightly.result("plan") == "failure", nightly.describe()
    assert errors_of(nightly, "plan") == [f"a retrain request's values are one line each; got: {INPUT_URL}..."]


def test_a_refused_request_fails_the_job_with_its_one_line_error_in_the_summary_and_artifacts(tmp_path):
    gone = tmp_path / "gone"
    state = tmp_path / "state"
    run = run_act(
        "workflow_dispatch",
        dispatch(data=str(gone), model_name="wiring", force="false", runner="subprocess"),
        tmp_path / "act",
        variables={"CNNOPS_BIN": str(CNNOPS), "CNNOPS_HOME": str(state), **DRIFT_VARIABLE},
    )
    assert run.returncode != 0 and run.result("plan") == "success", run.describe()
    assert run.outputs("plan")["if_drift"] == ""  # the drift variable is the schedule's, not a dispatch's
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
