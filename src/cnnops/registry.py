"""Gate and register: compare the candidate with the current `@champion` on the same test images,
then register it as a new version under `champion` or `challenger`, with the decision recorded.

A registration either completes (version, tags, decision artifact, alias) or is rolled back.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cnnops.artifacts import (
    TRAIN_HASHES_ARTIFACT,
    ModelSpec,
    manifest_fingerprint,
    read_evaluation,
    read_json,
    read_manifest,
    read_model_spec,
)
from cnnops.config import Config
from cnnops.console import say
from cnnops.errors import CnnopsError
from cnnops.sources import default_model_name
from cnnops.tracking import use_tracking_store

CHAMPION, CHALLENGER = "champion", "challenger"
MANAGED_TAG = "cnnops.managed"
DECISION_TAG = "cnnops.gate_decision"
# MLflow error codes that mean "no such model / alias" rather than a failing store.
ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def model_name_for(config: Config, source: str | None = None) -> str:
    """The configured registered-model name, else one derived from the data source (by default
    the config's; pass the ingested dataset's source when there is one)."""
    return config.registry.model_name or default_model_name(source or config.data.source)


def decide_promotion(model_dir: Path, test_dir: Path, evaluation_dir: Path, config: Config) -> dict[str, Any]:
    """Decide champion or challenger for an evaluated candidate; writes nothing to the registry.

    The registered-model name comes from the model folder (fixed at training), the rules from
    config. The champion and the candidate are compared on the same test images, leaving out any
    the champion was trained on.
    """
    use_tracking_store()
    client = MlflowClient()
    gate = config.gate
    run = read_json(model_dir / "run.json")
    name = run["registered_model"]
    spec = read_model_spec(model_dir)
    test = read_manifest(test_dir)
    metrics = read_evaluation(evaluation_dir)
    check_same_model(metrics, run["run_id"], evaluation_dir)
    check_same_test_set(metrics, test, evaluation_dir, test_dir)
    score = float(metrics[gate.metric])
    decision: dict[str, Any] = {
        "registered_model": name, "metric": gate.metric, "margin": gate.margin, "floor": gate.floor,
        "forced": gate.force_promote, "candidate_score": score, "champion_version": None,
        "champion_score": None, "candidate_score_compared": None, "compared_on": None,
        "champion_train_overlap": None, "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    champion = find_alias(client, name, CHAMPION)
    if champion is not None:
        decision["champion_version"] = int(champion.version)

    def decide(alias: str, reason: str) -> dict[str, Any]:
        decision.update(alias=alias, reason=reason)
        say(f"gate: {alias}: {reason}")
        return decision

    why_not = None if champion is None else incomparable_because(champion, spec)
    if champion is not None and why_not is None:
        why_not = compare_with_champion(client, champion, model_dir, spec, test, gate.metric, decision)

    if score < gate.floor:
        return decide(CHALLENGER, f"candidate {gate.metric} {score:.4f} is below the floor {gate.floor:.4f}")
    if champion is None:
        return decide(CHAMPION, f"no champion yet; candidate {gate.metric} {score:.4f} passes the floor "
                                f"{gate.floor:.4f}")
    if why_not is not None:
        if gate.force_promote:
            return decide(CHAMPION, f"forced by --force-promote; {why_not}")
        return decide(CHALLENGER, f"{why_not}; pass --force-promote to promote it anyway")
    left_out = decision["champion_train_overlap"] or 0
    versus = (f"candidate {gate.metric} {decision['candidate_score_compared']:.4f} vs champion "
              f"v{champion.version} {decision['champion_score']:.4f} on the same {decision['compared_on']} "
              f"test images" + (f" ({left_out} the champion trained on left out)" if left_out else "")
              + f", margin {gate.margin:.4f}")
    if gate.force_promote:
        return decide(CHAMPION, f"forced by --force-promote; {versus}")
    if decision["candidate_score_compared"] >= decision["champion_score"] + gate.margin:
        return decide(CHAMPION, f"better by at least the margin: {versus}")
    return decide(CHALLENGER, f"not better by the margin: {versus}")


def check_same_model(metrics: dict[str, Any], run_id: str, evaluation_dir: Path) -> None:
    """Refuse an evaluation made of another model than the one being gated or registered."""
    if metrics.get("run_id") != run_id:
        raise CnnopsError(f"{evaluation_dir} evaluates another model (run {metrics.get('run_id')}, not {run_id}); "
                          "run `cnnops evaluate` on this model first.")


def check_same_test_set(metrics: dict[str, Any], test: pd.DataFrame, evaluation_dir: Path, test_dir: Path) -> None:
    """Refuse an evaluation of other test images than the ones the gate scores the champion on."""
    if metrics.get("test_fingerprint") != manifest_fingerprint(test):
        raise CnnopsError(f"{evaluation_dir} was scored on other images than {test_dir}; evaluate on the test "
                          "folder you pass to the gate.")


def incomparable_because(champion: ModelVersion, spec: ModelSpec) -> str | None:
    """Why the champion cannot be scored against this candidate, or None when it can."""
    champion_spec = version_spec(champion)
    if champion_spec is None:
        return (f"champion v{champion.version} carries no cnnops input spec (it was not registered by cnnops), "
                "so it was not compared")
    if champion_spec.class_names != spec.class_names:
        return f"class list differs from champion v{champion.version} " \
               f"({describe_class_change(champion_spec.class_names, spec.class_names)}), so it was not compared"
    return None


def compare_with_champion(client: MlflowClient, champion: ModelVersion, model_dir: Path, spec: ModelSpec,
                          test: pd.DataFrame, metric: str, decision: dict[str, Any]) -> str | None:
    """Score champion and candidate on the test images the champion did not train on; records the
    scores in `decision`. Returns why no comparison was possible, or None."""
    from cnnops.evaluate import score_model  # imported here: TensorFlow is not needed for status

    seen = champion_training_hashes(client, champion)
    fair = test if seen is None else test[~test["sha256"].isin(seen)]
    decision["champion_train_overlap"] = None if seen is None else len(test) - len(fair)
    if fair.empty:
        return f"every test image was in champion v{champion.version}'s training data, so it was not compared"
    champion_model = mlflow.keras.load_model(f"models:/{champion.name}/{champion.version}")
    decision["champion_score"] = float(score_model(champion_model, version_spec(champion), fair)[metric])
    if len(fair) == len(test):
        decision["candidate_score_compared"] = decision["candidate_score"]
    else:
        import keras

        candidate = keras.saving.load_model(model_dir / "model.keras", compile=False)
        decision["candidate_score_compared"] = float(score_model(candidate, spec, fair)[metric])
    decision["compared_on"] = len(fair)
    return None


def champion_training_hashes(client: MlflowClient, champion: ModelVersion) -> set[str] | None:
    """sha256 of every image the champion trained on, from its run; None when not recorded."""
    with tempfile.TemporaryDirectory(prefix="cnnops-gate-") as scratch:
        try:
            path = client.download_artifacts(champion.run_id, TRAIN_HASHES_ARTIFACT, scratch)
        except (MlflowException, OSError):
            return None
        return set(Path(path).read_text().split())


def describe_class_change(old: list[str], new: list[str]) -> str:
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    parts = ([f"adds {', '.join(added)}"] if added else []) + ([f"drops {', '.join(removed)}"] if removed else [])
    return "; ".join(parts) or "same classes in another order"


def register_model(model_dir: Path, evaluation_dir: Path, decision: dict[str, Any]) -> dict[str, Any]:
    """Register the candidate as a new version and point the decided alias at it, all or nothing.

    The alias is set last, after the version's tags and the run's decision record; any failure
    (an interrupt or SIGTERM included) removes what this call wrote.
    """
    use_tracking_store()
    client = MlflowClient()
    metrics = read_evaluation(evaluation_dir)
    run = read_json(model_dir / "run.json")
    check_same_model(metrics, run["run_id"], evaluation_dir)
    spec = read_model_spec(model_dir)
    name, alias = decision["registered_model"], decision["alias"]
    decision = dict(decision)
    if alias == CHAMPION:
        current = find_alias(client, name, CHAMPION)
        current_version = None if current is None else int(current.version)
        if current_version != decision["champion_version"]:
            alias = decision["alias"] = CHALLENGER
            decision["reason"] = (f"the champion changed while this run was gated (v{decision['champion_version']}"
                                  f" -> v{current_version}); re-run to compare against the new champion")
    previous_tag = client.get_run(run["run_id"]).data.tags.get(DECISION_TAG)
    with sigterm_as_exit():
        created_model = ensure_registered_model(client, name)
        version: ModelVersion | None = None
        record: dict[str, Any] = {}
        try:
            version = client.create_model_version(name, source=run["model_uri"], run_id=run["run_id"],
                                                  tags=version_tags(spec, decision, metrics, run))
            record = {**decision, "version": int(version.version)}
            client.log_dict(run["run_id"], record, decision_artifact(version))
            client.set_tag(run["run_id"], DECISION_TAG, alias)
            client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            roll_back(client, name, run["run_id"], version, created_model, previous_tag, record)
            raise
    say(f"register: {name} v{version.version} is now @{alias}")
    return {"registered_model": name, "version": int(version.version), "alias": alias,
            "reason": decision["reason"]}


def decision_artifact(version: ModelVersion) -> str:
    """Run artifact holding the gate's decision for one registered version."""
    return f"gate/decision-v{version.version}.json"


def roll_back(client: MlflowClient, name: str, run_id: str, version: ModelVersion | None, created_model: bool,
              previous_tag: str | None, record: dict[str, Any]) -> None:
    """Undo a partial registration, restoring what an earlier registration of the same run wrote.
    A failing step is reported but never hides the error that caused the rollback."""
    steps = [lambda: client.delete_tag(run_id, DECISION_TAG) if previous_tag is None
             else client.set_tag(run_id, DECISION_TAG, previous_tag)]
    if version is not None:
        # MLflow cannot delete a run artifact; mark the record so nobody takes it for a registration.
        if record:
            steps.append(lambda: client.log_dict(run_id, {**record, "rolled_back": True}, decision_artifact(version)))
        steps.append(lambda: client.delete_model_version(name, version.version))
    if created_model:
        steps.append(lambda: client.delete_registered_model(name))
    for step in steps:
        try:
            step()
        except Exception as err:  # noqa: BLE001 - keep undoing the rest
            say(f"register: warning: rollback step failed: {err}")


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While registering, turn SIGTERM (a cancelled pipeline task) into SystemExit so the rollback runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def version_tags(spec: ModelSpec, decision: dict[str, Any], metrics: dict[str, Any],
                 run: dict[str, Any]) -> dict[str, str]:
    """What a registry reader needs without opening the run: scores, decision, input spec."""
    tags = {
        "cnnops.decision": decision["alias"],
        "cnnops.reason": decision["reason"],
        "cnnops.gate_metric": decision["metric"],
        "cnnops.candidate_score": f"{decision['candidate_score']:.6f}",
        "cnnops.test_accuracy": f"{metrics['accuracy']:.6f}",
        "cnnops.test_macro_f1": f"{metrics['macro_f1']:.6f}",
        "cnnops.n_test": str(metrics["n_test"]),
        "cnnops.spec": json.dumps(spec.to_dict(), sort_keys=True),
        "cnnops.run_id": run["run_id"],
    }
    if decision["champion_version"] is not None:
        tags["cnnops.compared_with_version"] = str(decision["champion_version"])
    if decision["champion_score"] is not None:
        tags["cnnops.champion_score"] = f"{decision['champion_score']:.6f}"
        tags["cnnops.candidate_score_compared"] = f"{decision['candidate_score_compared']:.6f}"
        tags["cnnops.compared_on"] = str(decision["compared_on"])
    return tags


def ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model if needed; True when this call created it."""
    try:
        client.get_registered_model(name)
        return False
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    client.create_registered_model(name, tags={MANAGED_TAG: "true"},
                                   description="Image classifier trained and gated by cnnops.")
    return True


def find_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        # A missing model or alias is "none"; anything else (a locked or unreachable store) is not.
        if err.error_code in ABSENT:
            return None
        raise


def version_spec(version: ModelVersion) -> ModelSpec | None:
    """A registered version's input spec, from its tags; None for a version cnnops did not register."""
    raw = version.tags.get("cnnops.spec")
    return None if raw is None else ModelSpec.from_dict(json.loads(raw))


def describe_registry(name: str | None = None) -> dict[str, Any]:
    """The registered models cnnops manages (or one), with aliases and each version's test metrics."""
    uri = use_tracking_store()
    client = MlflowClient()
    if name is not None:
        try:
            models = [client.get_registered_model(name)]
        except MlflowException:
            raise CnnopsError(f"no registered model named '{name}' in {uri}; run `cnnops run` first.") from None
    else:
        models = client.search_registered_models(filter_string=f"tags.`{MANAGED_TAG}` = 'true'")
    return {"tracking_uri": uri, "models": [describe_model(client, m.name) for m in models]}


def describe_model(client: MlflowClient, name: str) -> dict[str, Any]:
    # Version search results carry no aliases; the registered model holds the alias -> version map.
    aliases: dict[int, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        aliases.setdefault(int(number), []).append(alias)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    described = [describe_version(v, sorted(aliases.get(int(v.version), []))) for v in versions]
    by_alias = {alias: d for d in described for alias in d["aliases"]}
    return {"name": name, "champion": by_alias.get(CHAMPION), "challenger": by_alias.get(CHALLENGER),
            "versions": described}


def describe_version(version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    tags = version.tags

    def number(key: str) -> float | None:
        return float(tags[key]) if key in tags else None

    return {
        "version": int(version.version),
        "aliases": aliases,
        "run_id": version.run_id,
        "created_at": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        "test_accuracy": number("cnnops.test_accuracy"),
        "test_macro_f1": number("cnnops.test_macro_f1"),
        "decision": tags.get("cnnops.decision"),
        "reason": tags.get("cnnops.reason"),
        "champion_score": number("cnnops.champion_score"),
        "candidate_score_compared": number("cnnops.candidate_score_compared"),
        "compared_on": int(tags["cnnops.compared_on"]) if "cnnops.compared_on" in tags else None,
        "compared_with_version": int(tags["cnnops.compared_with_version"])
        if "cnnops.compared_with_version" in tags else None,
    }
