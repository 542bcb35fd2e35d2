"""Gate and register: compare the candidate with the current `@champion` on the same test images,
then register it as a new version under `champion` or `challenger`, with the decision recorded.

A registration either completes (version, tags, decision artifact, alias) or is rolled back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cnnops.artifacts import ModelSpec, read_evaluation, read_json, read_manifest, read_model_spec
from cnnops.config import Config
from cnnops.console import say
from cnnops.errors import CnnopsError
from cnnops.sources import default_model_name
from cnnops.tracking import use_tracking_store

CHAMPION, CHALLENGER = "champion", "challenger"
MANAGED_TAG = "cnnops.managed"


def model_name_for(config: Config) -> str:
    """The configured registered-model name, else one derived from the data source."""
    return config.registry.model_name or default_model_name(config.data.source)


def decide_promotion(model_dir: Path, test_dir: Path, evaluation_dir: Path, config: Config) -> dict[str, Any]:
    """Decide champion or challenger for an evaluated candidate; writes nothing to the registry.

    The registered-model name comes from the model folder (fixed at training), the rules from config.
    """
    use_tracking_store()
    client = MlflowClient()
    gate = config.gate
    name = read_json(model_dir / "run.json")["registered_model"]
    spec = read_model_spec(model_dir)
    metrics = read_evaluation(evaluation_dir)
    score = float(metrics[gate.metric])
    decision: dict[str, Any] = {
        "registered_model": name, "metric": gate.metric, "margin": gate.margin, "floor": gate.floor,
        "forced": gate.force_promote, "candidate_score": score, "champion_version": None,
        "champion_score": None, "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    champion = find_alias(client, name, CHAMPION)
    if champion is not None:
        decision["champion_version"] = int(champion.version)

    def decide(alias: str, reason: str) -> dict[str, Any]:
        decision.update(alias=alias, reason=reason)
        say(f"gate: {alias}: {reason}")
        return decision

    champion_spec = None if champion is None else version_spec(client, champion)
    comparable = champion_spec is not None and champion_spec.class_names == spec.class_names
    if comparable:
        from cnnops.evaluate import score_model  # imported here: TensorFlow is not needed for status

        champion_model = mlflow.keras.load_model(f"models:/{name}/{champion.version}")
        champion_scores = score_model(champion_model, champion_spec, read_manifest(test_dir))
        decision["champion_score"] = float(champion_scores[gate.metric])

    if score < gate.floor:
        return decide(CHALLENGER, f"candidate {gate.metric} {score:.4f} is below the floor {gate.floor:.4f}")
    if champion is None:
        return decide(CHAMPION, f"no champion yet; candidate {gate.metric} {score:.4f} passes the floor "
                                f"{gate.floor:.4f}")
    if not comparable:
        why = (f"class list differs from champion v{champion.version} "
               f"({len(champion_spec.class_names)} vs {len(spec.class_names)} classes), so it was not compared")
        if gate.force_promote:
            return decide(CHAMPION, f"forced by --force-promote; {why}")
        return decide(CHALLENGER, f"{why}; pass --force-promote to promote it anyway")
    versus = (f"candidate {gate.metric} {score:.4f} vs champion v{champion.version} "
              f"{decision['champion_score']:.4f} on the same {metrics['n_test']} test images, "
              f"margin {gate.margin:.4f}")
    if gate.force_promote:
        return decide(CHAMPION, f"forced by --force-promote; {versus}")
    if score >= decision["champion_score"] + gate.margin:
        return decide(CHAMPION, f"better by at least the margin: {versus}")
    return decide(CHALLENGER, f"not better by the margin: {versus}")


def register_model(model_dir: Path, evaluation_dir: Path, decision: dict[str, Any]) -> dict[str, Any]:
    """Register the candidate as a new version and point the decided alias at it, all or nothing."""
    use_tracking_store()
    client = MlflowClient()
    metrics = read_evaluation(evaluation_dir)
    run = read_json(model_dir / "run.json")
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
    created_model = ensure_registered_model(client, name)
    version: ModelVersion | None = None
    try:
        version = client.create_model_version(name, source=run["model_uri"], run_id=run["run_id"],
                                              tags=version_tags(spec, decision, metrics, run))
        client.log_dict(run["run_id"], {**decision, "version": int(version.version)}, "gate/decision.json")
        client.set_tag(run["run_id"], "cnnops.gate_decision", alias)
        client.set_registered_model_alias(name, alias, version.version)
    except Exception:
        if version is not None:
            client.delete_model_version(name, version.version)
        if created_model:
            client.delete_registered_model(name)
        raise
    say(f"register: {name} v{version.version} is now @{alias}")
    return {"registered_model": name, "version": int(version.version), "alias": alias,
            "reason": decision["reason"]}


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
    return tags


def ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model if needed; True when this call created it."""
    try:
        client.get_registered_model(name)
        return False
    except MlflowException:
        client.create_registered_model(name, tags={MANAGED_TAG: "true"},
                                       description="Image classifier trained and gated by cnnops.")
        return True


def find_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_spec(client: MlflowClient, version: ModelVersion) -> ModelSpec:
    """A registered version's input spec, from its tags."""
    raw = version.tags.get("cnnops.spec")
    if raw is None:
        raise CnnopsError(f"{version.name} v{version.version} has no cnnops.spec tag; it was not registered by "
                          "cnnops, so its input spec is unknown.")
    return ModelSpec.from_dict(json.loads(raw))


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
        "compared_with_version": int(tags["cnnops.compared_with_version"])
        if "cnnops.compared_with_version" in tags else None,
    }
