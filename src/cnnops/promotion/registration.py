"""Register a gated candidate as a new version under `champion` or `challenger`, with the decision
recorded on the version's tags (`VersionTags`) and in its run (`RegisteredDecision`), all or
nothing; and the one promotion rule on infra-validation (`require_infra_validation`).

Registration runs under the registered model's promotion lock (`cnnops.tracking.locks`), so two
runs never move `champion` at once. Under the lock it checks the champion again: if another run promoted a
version after this run's gate decided, the gate decides again against the new champion, on this
run's test images, and the version is registered with that decision.

A registration either completes (version, tags, decision artifact, alias) or is rolled back. Only
a kill that skips the rollback (SIGKILL, a lost machine) can stop it half way; the version is then
left with `cnnops.registration=pending`, set when it is created and turned to `complete` once its
alias is set. The next registration of the model, and `cnnops status`, find such a version under
the lock and resolve it: decision challenger, reason "interrupted: ...", `champion` untouched.
It takes no alias: `challenger` names the last candidate that went through the gate and the
registry whole, and an interrupted version did not (its run's records may be half written, and
a later complete challenger would be displaced).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cnnops.contracts.evaluation import EvaluationScores, read_evaluation
from cnnops.contracts.infra import InfraValidation
from cnnops.contracts.model import ModelSpec, RunRecord, read_model_spec, read_run_record
from cnnops.contracts.registry import (
    COMPLETE,
    DECISION_ARTIFACT,
    DECISION_TAG,
    INTERRUPTED,
    MANAGED_TAG,
    PENDING,
    REGISTRATION_TAG,
    RecordedEvidence,
    RegisteredDecision,
    Registration,
    VersionTags,
    read_version_tags,
    tag_key,
    version_tag_values,
)
from cnnops.contracts.served import ServedRuntime
from cnnops.core.console import say
from cnnops.inference.runtime import planned_runtime
from cnnops.promotion.gate import check_same_model
from cnnops.settings.config import Config
from cnnops.settings.naming import CHALLENGER, CHAMPION
from cnnops.tracking.locks import Lease, check_held, promotion_lock, renew_lease
from cnnops.tracking.registry import find_alias
from cnnops.tracking.stores import lookup, store_faults, use_tracking_store

if TYPE_CHECKING:
    from cnnops.contracts.gate import GateDecision


def register_model(
    model_dir: Path,
    test_dir: Path,
    evaluation_dir: Path,
    config: Config,
    decision: GateDecision,
    baselines_dir: Path | None,
    validation: InfraValidation | None,
) -> Registration:
    """Register the candidate as a new version and point the decided alias at it, all or nothing,
    under the model's promotion lock. Takes what the gate took (`decide_promotion`'s arguments),
    so that it can gate again if the champion moved since `decision` was made. A champion must
    also have passed `validation`, the infra-validation of its Bento; without it, or with a
    failed one, the version is registered as challenger saying why.

    The alias is set last, after the version's tags and the run's decision record; any failure
    (an interrupt or SIGTERM included) removes what this call wrote. A failing store is then a
    one-line error naming it.
    """
    use_tracking_store()
    client = MlflowClient()
    metrics = read_evaluation(evaluation_dir)
    run = read_run_record(model_dir)
    check_same_model(metrics, run.run_id, evaluation_dir)
    spec = read_model_spec(model_dir)
    name = decision.registered_model
    with store_faults(), sigterm_as_exit(), promotion_lock(client, name) as lease:
        resolve_interrupted(client, name)
        current = find_alias(client, name, CHAMPION)
        current_version = None if current is None else int(current.version)
        if current_version != decision.champion_version:
            from cnnops.promotion.gate import decide_promotion  # the gate reads the registry through this module

            say(
                f"register: the champion of {name} moved from {version_label(decision.champion_version)} to "
                f"{version_label(current_version)} while this run was gated; gating again against it"
            )
            decision = decide_promotion(model_dir, test_dir, evaluation_dir, config, baselines_dir)
            renew_lease(client, lease)
        decision = require_infra_validation(decision, validation, run.run_id)
        served = validation.runtime if validation is not None and validation.runtime is not None else None
        runtime = served or planned_runtime(config.serve.runtime, evaluation_dir)
        version = write_registration(client, lease, decision, spec, metrics, run, runtime)
    say(f"register: {name} v{version.version} is now @{decision.alias}")
    return Registration(
        registered_model=name, version=int(version.version), alias=decision.alias, reason=decision.reason
    )


# Infra-validates a candidate outside a pipeline (`serving.infra.validate_candidate`): given its
# model and evaluation folders and the config, it serves the candidate's Bento and checks it.
Validator = Callable[[Path, Path, Config], InfraValidation]


def gate_and_register(
    model_dir: Path,
    test_dir: Path,
    evaluation_dir: Path,
    config: Config,
    baselines_dir: Path | None,
    validate: Validator,
) -> Registration:
    """What the pipeline's gate, package, infra-validate and register steps do, in one process:
    gate the candidate and, when it earns champion, infra-validate it before registering."""
    from cnnops.promotion.gate import decide_promotion

    decision = decide_promotion(model_dir, test_dir, evaluation_dir, config, baselines_dir)
    validation = validate(model_dir, evaluation_dir, config) if decision.alias == CHAMPION else None
    return register_model(model_dir, test_dir, evaluation_dir, config, decision, baselines_dir, validation)


def version_label(number: int | None) -> str:
    return "none" if number is None else f"v{number}"


def write_registration(
    client: MlflowClient,
    lease: Lease,
    decision: GateDecision,
    spec: ModelSpec,
    metrics: EvaluationScores,
    run: RunRecord,
    runtime: ServedRuntime | str,
) -> ModelVersion:
    """The version (pending), the run's decision record and tag, the alias, then complete; rolled
    back on any failure that lets it."""
    name, alias = decision.registered_model, decision.alias
    previous_tag = client.get_run(run.run_id).data.tags.get(DECISION_TAG)
    created_model = ensure_registered_model(client, name)
    version: ModelVersion | None = None
    record: RegisteredDecision | None = None
    try:
        version = client.create_model_version(
            name,
            source=run.model_uri,
            run_id=run.run_id,
            tags={**version_tag_values(version_tags(spec, decision, metrics, run, runtime)), REGISTRATION_TAG: PENDING},
            model_id=run.model_id,
        )
        record = RegisteredDecision(
            version=int(version.version), alias=alias, reason=decision.reason, outcome="complete", gate=decision
        )
        log_decision(client, run.run_id, record)
        client.set_tag(run.run_id, DECISION_TAG, alias)
        check_held(client, lease)
        client.set_registered_model_alias(name, alias, version.version)
        client.set_model_version_tag(name, version.version, REGISTRATION_TAG, COMPLETE)
    except BaseException:
        roll_back(client, name, run.run_id, version, created_model, previous_tag, record)
        raise
    return version


def resolve_interrupted(client: MlflowClient, name: str) -> list[int]:
    """Settle the versions a killed registration left pending: challenger, "interrupted", no alias.
    Call it under the model's promotion lock, so that no registration in progress is mistaken for
    one that was killed; returns the versions it settled."""
    settled = []
    for version in pending_versions(client, name):
        intended = read_version_tags(version.tags).decision or "unknown"
        reason = (
            f"interrupted: the registration of v{version.version} stopped after the version was created and "
            f"before its alias was set (the gate had said {intended}); it holds no alias, run the pipeline "
            "again to gate it."
        )
        client.set_model_version_tag(name, version.version, tag_key("decision"), CHALLENGER)
        client.set_model_version_tag(name, version.version, tag_key("reason"), reason)
        if version.run_id:
            record = RegisteredDecision(
                version=int(version.version), alias=CHALLENGER, reason=reason, outcome="interrupted"
            )
            log_decision(client, version.run_id, record)
        client.set_model_version_tag(name, version.version, REGISTRATION_TAG, INTERRUPTED)
        say(f"register: {name} v{version.version} was interrupted while registering; recorded as challenger, no alias")
        settled.append(int(version.version))
    return settled


def pending_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """The model's versions whose registration never completed (none for a model not yet created)."""
    found = client.search_model_versions(f"name = '{name}' and tags.`{REGISTRATION_TAG}` = '{PENDING}'")
    return sorted(found, key=lambda v: int(v.version))


def log_decision(client: MlflowClient, run_id: str, record: RegisteredDecision) -> None:
    """The one writer of `gate/decision-vN.json`, whatever became of the version."""
    path = DECISION_ARTIFACT.format(version=record.version)
    client.log_dict(run_id, record.model_dump(mode="json"), path)


def roll_back(
    client: MlflowClient,
    name: str,
    run_id: str,
    version: ModelVersion | None,
    created_model: bool,
    previous_tag: str | None,
    record: RegisteredDecision | None,
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
        if record is not None:
            rolled_back = record.model_copy(update={"outcome": "rolled-back"})
            steps.append(lambda: log_decision(client, run_id, rolled_back))
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
    spec: ModelSpec, decision: GateDecision, metrics: EvaluationScores, run: RunRecord, runtime: ServedRuntime | str
) -> VersionTags:
    """What a registry reader needs without opening the run: scores, decision, input spec, and
    what serves it (the runtime infra-validation served, or the one `serve.runtime` would pick,
    or why none can) and why."""
    compared = decision.champion_score is not None and decision.candidate_score_compared is not None
    evidence = decision.evidence
    return VersionTags(
        decision=decision.alias,
        reason=decision.reason,
        gate_metric=decision.metric,
        candidate_score=decision.candidate_score,
        test_accuracy=metrics.accuracy,
        test_macro_f1=metrics.macro_f1,
        n_test=metrics.n_test,
        spec=spec.to_json(),
        run_id=run.run_id,
        compared_with_version=decision.champion_version,
        champion_score=decision.champion_score if compared else None,
        candidate_score_compared=decision.candidate_score_compared if compared else None,
        compared_on=decision.compared_on if compared else None,
        chance_score=decision.chance_score,
        best_baseline=decision.best_baseline if decision.best_baseline_score is not None else None,
        best_baseline_score=decision.best_baseline_score if decision.best_baseline is not None else None,
        evidence=None
        if evidence is None
        else RecordedEvidence.model_validate(evidence.model_dump(include=set(RecordedEvidence.model_fields))),
        served_by=runtime.name if isinstance(runtime, ServedRuntime) else None,
        served_by_reason=runtime.reason if isinstance(runtime, ServedRuntime) else runtime,
    )


def ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model if needed; True when this call created it."""
    if lookup(lambda: client.get_registered_model(name)) is not None:
        return False
    try:
        client.create_registered_model(
            name, tags={MANAGED_TAG: "true"}, description="Image classifier trained and gated by cnnops."
        )
    except MlflowException as err:  # another run created it since the lookup
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


def require_infra_validation(decision: GateDecision, validation: InfraValidation | None, run_id: str) -> GateDecision:
    """The decision to register: a champion only with a passed infra-validation of this run's
    Bento; otherwise a challenger, saying which check failed."""
    if decision.alias != CHAMPION:
        return decision
    if validation is None:
        reason = "infra validation failed: the candidate's Bento was not infra-validated"
    elif validation.run_id != run_id:
        reason = f"infra validation failed: the validation is of run {validation.run_id}, not {run_id}"
    elif not validation.passed:
        reason = f"infra validation failed: {validation.reason}"
    else:
        return decision
    return decision.model_copy(update={"alias": CHALLENGER, "reason": f"{reason} (the gate said: {decision.reason})"})
