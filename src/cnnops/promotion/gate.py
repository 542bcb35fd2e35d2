"""The gate: hold an evaluated candidate to chance, the floor and the baselines, and compare it
with the current `@champion` on the same test images, paired; decide champion or challenger.

The decision is a `GateDecision` (`cnnops.contracts.gate`): the gate step's output and the register
step's input. The gate writes nothing to the registry.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from cnnops.contracts.dataset import TRAIN_HASHES_ARTIFACT, manifest_fingerprint, read_manifest
from cnnops.contracts.evaluation import EvaluationScores, read_baseline_scores, read_evaluation, read_predictions
from cnnops.contracts.gate import ChampionComparison, ChampionScores, GateDecision, GateFacts
from cnnops.contracts.model import ModelSpec, read_model_spec, read_run_record
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.evaluation.evidence import chance_score, compare_paired
from cnnops.settings.config import Config, GateConfig
from cnnops.settings.naming import CHALLENGER, CHAMPION, Alias
from cnnops.tracking.registry import find_alias, version_spec
from cnnops.tracking.stores import lookup, store_faults, use_tracking_store

METRIC_WORDS = {"accuracy": "accuracy", "macro_f1": "macro F1"}


def decide_promotion(
    model_dir: Path, test_dir: Path, evaluation_dir: Path, config: Config, baselines_dir: Path | None = None
) -> GateDecision:
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
    baselines = None
    if baselines_dir is not None:
        baselines = read_baseline_scores(baselines_dir)
        check_same_test_set(baselines.test_fingerprint, test, baselines_dir, test_dir)
    best_baseline, best_baseline_score = (None, None) if baselines is None else baselines.best(gate.metric)
    champion = find_alias(client, name, CHAMPION)
    why_not = None if champion is None else incomparable_because(champion, spec)
    comparison = ChampionComparison(why_not=why_not)
    if champion is not None and why_not is None:
        comparison = compare_with_champion(client, champion, spec, test, predicted, config)
    facts = GateFacts(
        registered_model=name,
        metric=gate.metric,
        margin=gate.margin,
        floor=gate.floor,
        forced=gate.force_promote,
        test=gate.test,
        confidence=gate.confidence,
        candidate_score=metrics.score(gate.metric),
        n_test=len(test),
        chance_score=chance_score(gate.metric, test["label"].to_numpy(), spec.class_names),
        min_over_chance=gate.min_over_chance,
        baselines=None if baselines is None else baselines.scores,
        best_baseline=best_baseline,
        best_baseline_score=best_baseline_score,
        champion_version=None if champion is None else int(champion.version),
        **dict(comparison.scores),
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    alias, reason = judge_candidate(facts, gate, comparison.why_not)
    say(f"gate: {alias}: {reason}")
    return GateDecision(**dict(facts), alias=alias, reason=reason)


def judge_candidate(facts: GateFacts, gate: GateConfig, why_not: str | None) -> tuple[Alias, str]:
    """The alias a candidate has earned from the facts `decide_promotion` gathered, and the one
    sentence that says why. `why_not` says why the champion could not be compared, if it could not."""
    metric, score, chance = METRIC_WORDS[gate.metric], facts.candidate_score, facts.chance_score
    n_test, champion = facts.n_test, facts.champion_version
    if score < chance + gate.min_over_chance - 1e-12:
        return CHALLENGER, (
            f"The candidate's {metric} of {score:.4f} does not beat chance: always answering the "
            f"most common class scores {chance:.4f} on these {n_test} test images, and the gate "
            f"asks for {gate.min_over_chance:.4f} more."
        )
    if score < gate.floor:
        return CHALLENGER, f"The candidate's {metric} of {score:.4f} is below the floor of {gate.floor:.4f}."
    best, best_score = facts.best_baseline, facts.best_baseline_score
    held_to_baselines = gate.must_beat_baselines and best is not None and best_score is not None
    if held_to_baselines and best_score is not None and score < best_score - gate.baseline_tolerance - 1e-12:
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
    versus = describe_comparison(facts, metric)
    if gate.force_promote:
        return CHAMPION, f"Forced by --force-promote: {versus}."
    if gate.test == "none":
        compared, champion_score = facts.candidate_score_compared, facts.champion_score
        if compared is not None and champion_score is not None and compared >= champion_score + gate.margin - 1e-12:
            return CHAMPION, f"Better by at least the margin of {gate.margin:.4f}: {versus}."
        return CHALLENGER, f"Not better by the margin of {gate.margin:.4f}: {versus}."
    if facts.evidence is not None and facts.evidence.shows_better(gate.margin):
        return CHAMPION, f"Better than champion v{champion} with {gate.confidence:.0%} confidence: {versus}."
    return CHALLENGER, (
        f"Not shown better than champion v{champion} with {gate.confidence:.0%} confidence and a "
        f"margin of {gate.margin:.4f}: {versus}."
    )


def describe_comparison(facts: GateFacts, metric: str) -> str:
    """Both scores on the shared images and, for the paired test, the evidence, in one clause."""
    left_out = facts.champion_train_overlap or 0
    text = (
        f"{metric} {facts.candidate_score_compared:.4f} against {facts.champion_score:.4f} for "
        f"champion v{facts.champion_version} on the same {facts.compared_on} test images"
        + (f" ({left_out} the champion trained on left out)" if left_out else "")
    )
    evidence = facts.evidence
    if evidence is None:
        return text
    return (
        f"{text}; {evidence.only_candidate_right} images only the candidate got right and "
        f"{evidence.only_champion_right} only the champion (McNemar p = {evidence.p_value:.3f}), "
        f"difference {evidence.difference:+.4f} with a {evidence.confidence:.0%} interval of "
        f"[{evidence.interval_low:+.4f}, {evidence.interval_high:+.4f}]"
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
) -> ChampionComparison:
    """Score the champion on the test images it did not train on, paired with the candidate's
    predictions on the same images."""
    import mlflow

    from cnnops.modeling.inputs import predict_manifest  # imported here: TensorFlow is not needed for status

    seen = champion_training_hashes(client, champion)
    fair = np.ones(len(test), dtype=bool) if seen is None else ~test["sha256"].isin(seen).to_numpy()
    overlap = None if seen is None else int((~fair).sum())
    if not fair.any():
        return ChampionComparison(
            scores=ChampionScores(champion_train_overlap=overlap),
            why_not=f"every test image was in champion v{champion.version}'s training data, so it was not compared",
        )
    champion_spec = version_spec(champion) or spec  # incomparable_because has checked it is there
    with store_faults():
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
    scores = ChampionScores(
        champion_score=evidence.champion_score,
        candidate_score_compared=evidence.candidate_score,
        compared_on=int(fair.sum()),
        champion_train_overlap=overlap,
        evidence=evidence,
    )
    return ChampionComparison(scores=scores)


def champion_training_hashes(client: MlflowClient, champion: ModelVersion) -> set[str] | None:
    """sha256 of every image the champion trained on, from its run; None when not recorded. A
    failing store is a one-line error, not "not recorded"."""
    run_id = champion.run_id
    if run_id is None:
        return None
    with tempfile.TemporaryDirectory(prefix="cnnops-gate-") as scratch:
        path = lookup(lambda: client.download_artifacts(run_id, TRAIN_HASHES_ARTIFACT, scratch))
        return None if path is None else set(Path(path).read_text().split())


def describe_class_change(old: list[str], new: list[str]) -> str:
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    parts = ([f"adds {', '.join(added)}"] if added else []) + ([f"drops {', '.join(removed)}"] if removed else [])
    return "; ".join(parts) or "same classes in another order"


def check_same_model(metrics: EvaluationScores, run_id: str, evaluation_dir: Path) -> None:
    """Refuse an evaluation made of another model than the one being gated or registered."""
    if metrics.run_id != run_id:
        raise CnnopsError(
            f"{evaluation_dir} evaluates another model (run {metrics.run_id}, not {run_id}); "
            "run `cnnops evaluate` on this model first."
        )
