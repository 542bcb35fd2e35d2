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
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cnnops.artifacts import (
    TRAIN_HASHES_ARTIFACT,
    EvaluationScores,
    ModelSpec,
    RunRecord,
    manifest_fingerprint,
    read_baseline_scores,
    read_evaluation,
    read_manifest,
    read_model_spec,
    read_predictions,
    read_run_record,
)
from cnnops.config import Config, GateConfig
from cnnops.console import say
from cnnops.errors import CnnopsError
from cnnops.evidence import PairedEvidence, chance_score, compare_paired
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


def decide_promotion(
    model_dir: Path, test_dir: Path, evaluation_dir: Path, config: Config, baselines_dir: Path | None = None
) -> dict[str, Any]:
    """Decide champion or challenger for an evaluated candidate; writes nothing to the registry.

    The registered-model name comes from the model folder (fixed at training), the rules from
    config. In order, the candidate must beat chance on its own test split, reach the floor, not
    fall below the best baseline scored on the same split (`baselines_dir`, when given), and be
    shown better than the champion on the same test images, leaving out any the champion was
    trained on.
    """
    use_tracking_store()
    client = MlflowClient()
    gate = config.gate
    run = read_run_record(model_dir)
    name = run.registered_model
    spec = read_model_spec(model_dir)
    test = read_manifest(test_dir)
    metrics = read_evaluation(evaluation_dir)
    check_same_model(metrics, run.run_id, evaluation_dir)
    check_same_test_set(metrics.test_fingerprint, test, evaluation_dir, test_dir)
    predicted = read_predictions(evaluation_dir, test)
    baselines = None if baselines_dir is None else read_baseline_scores(baselines_dir)
    if baselines is not None:
        check_same_test_set(baselines.test_fingerprint, test, baselines_dir, test_dir)
    score = metrics.score(gate.metric)
    chance = chance_score(gate.metric, test["label"].to_numpy(), spec.class_names)
    decision: dict[str, Any] = {
        "registered_model": name,
        "metric": gate.metric,
        "margin": gate.margin,
        "floor": gate.floor,
        "forced": gate.force_promote,
        "test": gate.test,
        "confidence": gate.confidence,
        "candidate_score": score,
        "n_test": len(test),
        "chance_score": chance,
        "min_over_chance": gate.min_over_chance,
        "baselines": None if baselines is None else baselines.scores,
        "best_baseline": None,
        "best_baseline_score": None,
        "champion_version": None,
        "champion_score": None,
        "candidate_score_compared": None,
        "compared_on": None,
        "champion_train_overlap": None,
        "evidence": None,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if baselines is not None:
        decision["best_baseline"], decision["best_baseline_score"] = baselines.best(gate.metric)
    champion = find_alias(client, name, CHAMPION)
    if champion is not None:
        decision["champion_version"] = int(champion.version)

    why_not = None if champion is None else incomparable_because(champion, spec)
    if champion is not None and why_not is None:
        why_not = compare_with_champion(client, champion, spec, test, predicted, config, decision)
    alias, reason = judge_candidate(decision, gate, why_not)
    decision.update(alias=alias, reason=reason)
    say(f"gate: {alias}: {reason}")
    return decision


def judge_candidate(decision: dict[str, Any], gate: GateConfig, why_not: str | None) -> tuple[str, str]:
    """The alias a candidate has earned from the facts `decide_promotion` gathered, and the one
    sentence that says why. `why_not` says why the champion could not be compared, if it could not."""
    metric, score, chance = METRIC_WORDS[gate.metric], decision["candidate_score"], decision["chance_score"]
    n_test, champion = decision["n_test"], decision["champion_version"]
    if score < chance + gate.min_over_chance - 1e-12:
        return CHALLENGER, (
            f"The candidate's {metric} of {score:.4f} does not beat chance: always answering the "
            f"most common class scores {chance:.4f} on these {n_test} test images, and the gate "
            f"asks for {gate.min_over_chance:.4f} more."
        )
    if score < gate.floor:
        return CHALLENGER, f"The candidate's {metric} of {score:.4f} is below the floor of {gate.floor:.4f}."
    best, best_score = decision["best_baseline"], decision["best_baseline_score"]
    held_to_baselines = gate.must_beat_baselines and best is not None
    if held_to_baselines and score < best_score - gate.baseline_tolerance - 1e-12:
        return CHALLENGER, (
            f"The candidate's {metric} of {score:.4f} is below the {best} baseline's "
            f"{best_score:.4f} on the same {n_test} test images (tolerance "
            f"{gate.baseline_tolerance:.4f}), so a CNN is not yet worth serving here."
        )
    if champion is None:
        passed = f"it beats chance ({chance:.4f})" + (
            f" and is not below the best baseline, {best} ({best_score:.4f})"
            if held_to_baselines
            else " (no baseline scores were given, so none were checked)"
            if gate.must_beat_baselines
            else ""
        )
        return CHAMPION, f"There is no champion yet; the candidate's {metric} is {score:.4f} and {passed}."
    if why_not is not None:
        if gate.force_promote:
            return CHAMPION, f"Forced by --force-promote: {why_not}."
        return CHALLENGER, f"{why_not[0].upper()}{why_not[1:]}; pass --force-promote to promote it anyway."
    versus = describe_comparison(decision, metric)
    if gate.force_promote:
        return CHAMPION, f"Forced by --force-promote: {versus}."
    if gate.test == "none":
        if decision["candidate_score_compared"] >= decision["champion_score"] + gate.margin - 1e-12:
            return CHAMPION, f"Better by at least the margin of {gate.margin:.4f}: {versus}."
        return CHALLENGER, f"Not better by the margin of {gate.margin:.4f}: {versus}."
    if PairedEvidence(**decision["evidence"]).shows_better(gate.margin):
        return CHAMPION, f"Better than champion v{champion} with {gate.confidence:.0%} confidence: {versus}."
    return CHALLENGER, (
        f"Not shown better than champion v{champion} with {gate.confidence:.0%} confidence and a "
        f"margin of {gate.margin:.4f}: {versus}."
    )


METRIC_WORDS = {"accuracy": "accuracy", "macro_f1": "macro F1"}


def describe_comparison(decision: dict[str, Any], metric: str) -> str:
    """Both scores on the shared images and, for the paired test, the evidence, in one clause."""
    left_out = decision["champion_train_overlap"] or 0
    text = (
        f"{metric} {decision['candidate_score_compared']:.4f} against {decision['champion_score']:.4f} for "
        f"champion v{decision['champion_version']} on the same {decision['compared_on']} test images"
        + (f" ({left_out} the champion trained on left out)" if left_out else "")
    )
    evidence = decision["evidence"]
    if evidence is None:
        return text
    return (
        f"{text}; {evidence['only_candidate_right']} images only the candidate got right and "
        f"{evidence['only_champion_right']} only the champion (McNemar p = {evidence['p_value']:.3f}), "
        f"difference {evidence['difference']:+.4f} with a {evidence['confidence']:.0%} interval of "
        f"[{evidence['interval_low']:+.4f}, {evidence['interval_high']:+.4f}]"
    )


def check_same_model(metrics: EvaluationScores, run_id: str, evaluation_dir: Path) -> None:
    """Refuse an evaluation made of another model than the one being gated or registered."""
    if metrics.run_id != run_id:
        raise CnnopsError(
            f"{evaluation_dir} evaluates another model (run {metrics.run_id}, not {run_id}); "
            "run `cnnops evaluate` on this model first."
        )


def check_same_test_set(fingerprint: str | None, test: pd.DataFrame, scored_dir: Path, test_dir: Path) -> None:
    """Refuse scores (an evaluation, the baselines) of other test images than the ones the gate
    scores the champion on."""
    if fingerprint != manifest_fingerprint(test):
        raise CnnopsError(
            f"{scored_dir} was scored on other images than {test_dir}; score on the test folder you pass to the gate."
        )


def incomparable_because(champion: ModelVersion, spec: ModelSpec) -> str | None:
    """Why the champion cannot be scored against this candidate, or None when it can."""
    champion_spec = version_spec(champion)
    if champion_spec is None:
        return (
            f"champion v{champion.version} carries no cnnops input spec (it was not registered by cnnops), "
            "so it was not compared"
        )
    if champion_spec.class_names != spec.class_names:
        return (
            f"class list differs from champion v{champion.version} "
            f"({describe_class_change(champion_spec.class_names, spec.class_names)}), so it was not compared"
        )
    return None


def compare_with_champion(
    client: MlflowClient,
    champion: ModelVersion,
    spec: ModelSpec,
    test: pd.DataFrame,
    predicted: list[str],
    config: Config,
    decision: dict[str, Any],
) -> str | None:
    """Score the champion on the test images it did not train on, paired with the candidate's
    predictions on the same images; records scores and evidence in `decision`. Returns why no
    comparison was possible, or None."""
    from cnnops.evaluate import predict_manifest  # imported here: TensorFlow is not needed for status

    seen = champion_training_hashes(client, champion)
    fair = np.ones(len(test), dtype=bool) if seen is None else ~test["sha256"].isin(seen).to_numpy()
    decision["champion_train_overlap"] = None if seen is None else int((~fair).sum())
    if not fair.any():
        return f"every test image was in champion v{champion.version}'s training data, so it was not compared"
    champion_spec = version_spec(champion)
    champion_model = mlflow.keras.load_model(f"models:/{champion.name}/{champion.version}")
    probabilities = predict_manifest(champion_model, champion_spec, test[fair])
    champion_predicted = np.array(champion_spec.class_names)[probabilities.argmax(axis=1)]
    evidence = compare_paired(
        config.gate.metric,
        test["label"].to_numpy()[fair],
        np.array(predicted)[fair],
        champion_predicted,
        config.gate.confidence,
        config.seed,
        spec.class_names,
    )
    decision.update(
        champion_score=evidence.champion_score,
        candidate_score_compared=evidence.candidate_score,
        compared_on=int(fair.sum()),
        evidence=evidence.to_dict(),
    )
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
    run = read_run_record(model_dir)
    check_same_model(metrics, run.run_id, evaluation_dir)
    spec = read_model_spec(model_dir)
    name, alias = decision["registered_model"], decision["alias"]
    decision = dict(decision)
    if alias == CHAMPION:
        current = find_alias(client, name, CHAMPION)
        current_version = None if current is None else int(current.version)
        if current_version != decision["champion_version"]:
            alias = decision["alias"] = CHALLENGER
            decision["reason"] = (
                f"The champion changed while this run was gated (v{decision['champion_version']}"
                f" -> v{current_version}); re-run to compare against the new champion"
            )
    previous_tag = client.get_run(run.run_id).data.tags.get(DECISION_TAG)
    with sigterm_as_exit():
        created_model = ensure_registered_model(client, name)
        version: ModelVersion | None = None
        record: dict[str, Any] = {}
        try:
            version = client.create_model_version(
                name,
                source=run.model_uri,
                run_id=run.run_id,
                tags=version_tags(spec, decision, metrics, run),
                model_id=run.model_id,
            )
            record = {**decision, "version": int(version.version)}
            client.log_dict(run.run_id, record, decision_artifact(version))
            client.set_tag(run.run_id, DECISION_TAG, alias)
            client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            roll_back(client, name, run.run_id, version, created_model, previous_tag, record)
            raise
    say(f"register: {name} v{version.version} is now @{alias}")
    return {"registered_model": name, "version": int(version.version), "alias": alias, "reason": decision["reason"]}


def decision_artifact(version: ModelVersion) -> str:
    """Run artifact holding the gate's decision for one registered version."""
    return f"gate/decision-v{version.version}.json"


def roll_back(
    client: MlflowClient,
    name: str,
    run_id: str,
    version: ModelVersion | None,
    created_model: bool,
    previous_tag: str | None,
    record: dict[str, Any],
) -> None:
    """Undo a partial registration, restoring what an earlier registration of the same run wrote.
    A failing step is reported but never hides the error that caused the rollback."""
    steps = [
        lambda: (
            client.delete_tag(run_id, DECISION_TAG)
            if previous_tag is None
            else client.set_tag(run_id, DECISION_TAG, previous_tag)
        )
    ]
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


def version_tags(
    spec: ModelSpec, decision: dict[str, Any], metrics: EvaluationScores, run: RunRecord
) -> dict[str, str]:
    """What a registry reader needs without opening the run: scores, decision, input spec."""
    tags = {
        "cnnops.decision": decision["alias"],
        "cnnops.reason": decision["reason"],
        "cnnops.gate_metric": decision["metric"],
        "cnnops.candidate_score": f"{decision['candidate_score']:.6f}",
        "cnnops.test_accuracy": f"{metrics.accuracy:.6f}",
        "cnnops.test_macro_f1": f"{metrics.macro_f1:.6f}",
        "cnnops.n_test": str(metrics.n_test),
        "cnnops.spec": json.dumps(spec.to_dict(), sort_keys=True),
        "cnnops.run_id": run.run_id,
    }
    if decision["champion_version"] is not None:
        tags["cnnops.compared_with_version"] = str(decision["champion_version"])
    if decision["champion_score"] is not None:
        tags["cnnops.champion_score"] = f"{decision['champion_score']:.6f}"
        tags["cnnops.candidate_score_compared"] = f"{decision['candidate_score_compared']:.6f}"
        tags["cnnops.compared_on"] = str(decision["compared_on"])
    if decision.get("chance_score") is not None:
        tags["cnnops.chance_score"] = f"{decision['chance_score']:.6f}"
    if decision.get("best_baseline") is not None:
        tags["cnnops.best_baseline"] = decision["best_baseline"]
        tags["cnnops.best_baseline_score"] = f"{decision['best_baseline_score']:.6f}"
    evidence = decision.get("evidence")
    if evidence is not None:
        tags.update(
            {
                "cnnops.p_value": f"{evidence['p_value']:.6g}",
                "cnnops.difference": f"{evidence['difference']:.6f}",
                "cnnops.interval": f"[{evidence['interval_low']:.6f}, {evidence['interval_high']:.6f}]",
                "cnnops.confidence": f"{evidence['confidence']:g}",
                "cnnops.only_candidate_right": str(evidence["only_candidate_right"]),
                "cnnops.only_champion_right": str(evidence["only_champion_right"]),
            }
        )
    return tags


def ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model if needed; True when this call created it."""
    try:
        client.get_registered_model(name)
        return False
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    client.create_registered_model(
        name, tags={MANAGED_TAG: "true"}, description="Image classifier trained and gated by cnnops."
    )
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
    return {
        "name": name,
        "champion": by_alias.get(CHAMPION),
        "challenger": by_alias.get(CHALLENGER),
        "versions": described,
    }


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
        if "cnnops.compared_with_version" in tags
        else None,
        "chance_score": number("cnnops.chance_score"),
        "best_baseline": tags.get("cnnops.best_baseline"),
        "best_baseline_score": number("cnnops.best_baseline_score"),
        "evidence": version_evidence(tags),
    }


def version_evidence(tags: dict[str, str]) -> dict[str, Any] | None:
    """The paired comparison recorded on a version, or None when it was not compared paired."""
    if "cnnops.p_value" not in tags:
        return None
    low, high = json.loads(tags["cnnops.interval"])
    return {
        "p_value": float(tags["cnnops.p_value"]),
        "difference": float(tags["cnnops.difference"]),
        "interval_low": low,
        "interval_high": high,
        "confidence": float(tags["cnnops.confidence"]),
        "only_candidate_right": int(tags["cnnops.only_candidate_right"]),
        "only_champion_right": int(tags["cnnops.only_champion_right"]),
    }
