"""retrain.yml run by act on this machine, trigger by trigger, on a small folder of images the test
writes: the first dispatch crowns v1, a dispatch asking v1's running service for drift skips when
it has no verdict and fails with one line when the service does not answer, an unchanged one
skips, images added to a class retrain with the change and the gate's evidence in the job
summary, an emptied class fails the job with its one-line error, and two dispatches at once never
both train."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from support.act import ActRun, dispatch, finish_act, run_act, start_act
from support.commands import CNNOPS
from support.images import draw, write_images
from support.serving import cnnops_serving

from cnnops.core.processes import LOOPBACK, free_port

NAME = "ci-retrain"
# Tiny and cheap: two epochs, and floors off so that the first candidate is crowned whatever it
# scores; no cooldown, so each change retrains at once.
SETTINGS = " ".join(
    [
        "train.epochs=2",
        "train.batch_size=16",
        "train.patience=20",
        "gate.floor=0",
        "gate.min_over_chance=0",
        "gate.must_beat_baselines=false",
        "retrain.cooldown_minutes=0",
    ]
)
# One act run that trains: the pipeline on about 40 tiny images, TensorFlow's imports included.
TRAIN_SECONDS = 600
# `cnnops serve` of the tiny champion: TensorFlow's imports, the model loaded and traced.
SERVE_SECONDS = 180


def add_images(folder: Path, count: int, seed: int) -> None:
    """`count` new images of the folder's class (its name), beside the ones it has."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(draw(folder.name, rng)).save(folder / f"{folder.name}_added_{seed}_{index:03d}.png")


def decision_of(run: ActRun) -> dict[str, str]:
    return json.loads((run.artifacts / "retrain-decision" / "decision.json").read_text())


@pytest.mark.slow
@pytest.mark.pipeline
@pytest.mark.server
def test_retrain_workflow_trains_skips_retrains_fails_and_never_trains_twice_at_once(tmp_path, record_property):
    source = write_images(tmp_path / "images", per_class=12, seed=4)
    state = tmp_path / "state"
    variables = {"CNNOPS_BIN": str(CNNOPS), "CNNOPS_HOME": str(state)}
    inputs = {"data": str(source), "model_name": NAME, "force": "false", "runner": "subprocess", "settings": SETTINGS}
    request = dispatch(**inputs)
    runs = iter(range(1, 100))

    def retrain(timeout: float = TRAIN_SECONDS, **asked: str) -> ActRun:
        work = tmp_path / f"act-{next(runs)}"
        return run_act("workflow_dispatch", dispatch(**inputs, **asked), work, variables=variables, timeout=timeout)

    # (1) No champion yet: it trains and crowns v1.
    first = retrain()
    assert first.result("retrain") == "success", first.describe()
    outputs = first.outputs("retrain")
    assert (outputs["trained"], outputs["decision"], outputs["version"]) == ("true", "promoted", "1"), outputs
    assert float(outputs["accuracy"]) >= 0
    assert "trained v1, promoted to champion" in first.summary("retrain")
    assert decision_of(first)["decision"] == "promoted"
    assert (first.artifacts / "retrain-decision" / "report.md").is_file()

    # (2) Asked whether v1's service reports drift: it has seen no traffic, so its verdict is
    # too-few and the run skips as no-drift; a service that does not answer fails the job.
    with cnnops_serving(state, NAME, tmp_path / "serve.log", SERVE_SECONDS) as (url, _):
        asked = retrain(if_drift=url)
    assert asked.result("retrain") == "success", asked.describe()
    assert asked.outputs("plan")["if_drift"] == url
    outputs = asked.outputs("retrain")
    assert (outputs["trained"], outputs["decision"], outputs["reason"]) == ("false", "skipped", "no-drift"), outputs
    assert f"{url} reports too-few" in outputs["detail"], outputs
    assert "skipped (no-drift)" in asked.summary("retrain")
    assert decision_of(asked)["reason"] == "no-drift"

    nobody = f"http://{LOOPBACK}:{free_port()}"
    unanswered = retrain(if_drift=nobody)
    assert unanswered.returncode != 0 and unanswered.result("retrain") == "failure", unanswered.describe()
    outputs = unanswered.outputs("retrain")
    assert (outputs["trained"], outputs["decision"], outputs["reason"]) == ("false", "failed", "error"), outputs
    assert f"{nobody} did not answer" in outputs["detail"] and "\n" not in outputs["detail"], outputs
    assert f"**Error:** {outputs['detail']}" in unanswered.summary("retrain")
    assert "Traceback" not in unanswered.summary("retrain") and "Traceback" not in unanswered.log("retrain")

    # (3) Nothing changed: it skips, and says why.
    second = retrain()
    assert second.result("retrain") == "success", second.describe()
    outputs = second.outputs("retrain")
    assert (outputs["trained"], outputs["decision"], outputs["reason"]) == ("false", "skipped", "unchanged"), outputs
    assert "skipped (unchanged)" in second.summary("retrain")
    # How long a skip takes through act, for the record (timings belong in the benchmarks).
    record_property("skip_seconds", round(second.seconds, 1))
    print(f"unchanged dispatch through act: {second.seconds:.1f} s (first, trained: {first.seconds:.1f} s)")

    # (4) Images added to one class: it retrains, with the change and the gate's evidence.
    add_images(source / "disc", 6, seed=11)
    third = retrain()
    assert third.result("retrain") == "success", third.describe()
    outputs = third.outputs("retrain")
    assert (outputs["trained"], outputs["reason"], outputs["version"]) == ("true", "data-changed", "2"), outputs
    assert outputs["decision"] in ("promoted", "challenger")
    summary = third.summary("retrain")
    assert "+6 in disc" in summary
    assert "### Candidate against the champion" in summary and "champion v1" in summary
    assert "Evidence:" in summary
    assert f"**{'champion' if outputs['decision'] == 'promoted' else 'challenger'}**:" in summary

    # (5) A class folder emptied: the job fails, its summary carries the one-line error.
    stripes = sorted((source / "stripes").iterdir())
    kept = tmp_path / "stripes-kept"
    kept.mkdir()
    for image in stripes:
        shutil.move(image, kept / image.name)
    fourth = retrain()
    assert fourth.returncode != 0 and fourth.result("retrain") == "failure", fourth.describe()
    outputs = fourth.outputs("retrain")
    assert (outputs["trained"], outputs["decision"]) == ("false", "failed"), outputs
    assert "stripes" in outputs["detail"] and "\n" not in outputs["detail"]
    assert f"**Error:** {outputs['detail']}" in fourth.summary("retrain")
    assert decision_of(fourth)["outcome"] == "failure"

    # (6) The class back, images added to another, and two dispatches at once: one trains, the
    # other waits for it and then finds its version (or skips); never both.
    for image in stripes:
        shutil.move(kept / image.name, image)
    add_images(source / "cross", 6, seed=12)
    started = time.monotonic()
    racing = [
        start_act("workflow_dispatch", request, tmp_path / f"act-{next(runs)}", variables=variables) for _ in range(2)
    ]
    both = [finish_act(proc, artifacts, started, 2 * TRAIN_SECONDS) for proc, artifacts in racing]
    for run in both:
        assert run.result("retrain") == "success", run.describe()
    trained = sorted(run.outputs("retrain")["trained"] for run in both)
    assert trained == ["false", "true"], [run.outputs("retrain") for run in both]
    waited = next(run.outputs("retrain") for run in both if run.outputs("retrain")["trained"] == "false")
    assert waited["decision"] == "skipped" and waited["reason"] == "unchanged", waited
    store = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    assert len(store.search_model_versions(f"name='{NAME}'")) == 3  # v1, v2, and one from the race

    # The test's own images are all that changed in its folder: the state lives outside it.
    assert sorted(p.name for p in source.iterdir()) == ["cross", "disc", "stripes"]
    assert not any(p.name.startswith(".") for p in source.rglob("*"))
