"""What a retrain tells the people and the CI job that started it: a Markdown report (the data
change per class, the candidate against the champion with the gate's evidence, the baselines, the
decision, where to look), kept in the state folder and appended to `$GITHUB_STEP_SUMMARY`, and
`key=value` lines for `$GITHUB_OUTPUT`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from cnnops.contracts.gate import GateDecision
from cnnops.contracts.records import Record, write_record
from cnnops.core.atomic import write_text_atomically
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import state_home
from cnnops.promotion.gate import METRIC_WORDS, describe_comparison
from cnnops.promotion.retrain import RetrainDecision
from cnnops.settings.naming import slug

Status = Literal["promoted", "challenger", "skipped", "failed", "submitted"]
# The GitHub Actions files a step writes to, when it runs in a workflow.
SUMMARY_ENV, OUTPUT_ENV = "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT"


class RetrainOutcome(Record):
    """How a retrain ended: its decision, and when it trained, the version, the gate's decision and
    where the run's outputs are; when it failed, the one-line error."""

    status: Status
    model: str | None = None
    decision: RetrainDecision | None = None
    error: str | None = None
    version: int | None = None
    gate: GateDecision | None = None
    accuracy: float | None = None
    submitted: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    seconds: float


def check_workflow_files() -> None:
    """Refuse, before any work, a `$GITHUB_STEP_SUMMARY` or `$GITHUB_OUTPUT` that cannot be written."""
    for env in (SUMMARY_ENV, OUTPUT_ENV):
        path = os.environ.get(env)
        if not path:
            continue
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as err:
            raise CnnopsError(
                f"{env} is {path}, which cannot be written ({err.strerror}); nothing was trained."
            ) from None


def publish_outcome(outcome: RetrainOutcome) -> Path:
    """Write the report and the outcome to the state folder, then to the workflow's files when set;
    returns the report's path."""
    folder = retrain_folder(outcome.model)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = folder / f"report-{stamp}.md"
    text = format_report(outcome, report)
    write_text_atomically(report, text)
    write_text_atomically(folder / "report.md", text)
    write_record(folder / "outcome.json", outcome)
    append_to(SUMMARY_ENV, text)
    append_to(OUTPUT_ENV, "".join(f"{key}={value}\n" for key, value in output_lines(outcome, report).items()))
    return report


def retrain_folder(model: str | None) -> Path:
    return state_home() / "retrain" / (slug(model) if model else "unknown-model")


def append_to(env: str, text: str) -> None:
    path = os.environ.get(env)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise CnnopsError(f"{env} is {path}, which cannot be written ({err.strerror}).") from None


def output_lines(outcome: RetrainOutcome, report: Path) -> dict[str, str]:
    """The step outputs a workflow reads: did it train, the decision, why, the version, accuracy."""
    decision = outcome.decision
    return {
        "trained": str(outcome.status in ("promoted", "challenger")).lower(),
        "decision": outcome.status,
        "reason": "error" if decision is None else decision.reason,
        "detail": one_line(outcome.error if outcome.error else "" if decision is None else decision.detail),
        "model": outcome.model or "",
        "version": "" if outcome.version is None else str(outcome.version),
        "accuracy": "" if outcome.accuracy is None else f"{outcome.accuracy:.4f}",
        "report": str(report),
    }


def one_line(text: str) -> str:
    return " ".join(text.split())


def format_report(outcome: RetrainOutcome, report: Path) -> str:
    """The Markdown a CI page shows: did it train, why, is the new model better, where to look."""
    decision, gate = outcome.decision, outcome.gate
    lines = [f"## cnnops retrain: {outcome.model or 'no model'}: {headline(outcome)}", ""]
    if decision is not None:
        lines += [f"**Trained:** {'yes' if decision.train else 'no'}. **Why:** {decision.detail}.", ""]
    if outcome.error:
        lines += [f"**Error:** {outcome.error}", ""]
    if decision is not None:
        lines += data_section(decision)
    if gate is not None:
        lines += comparison_section(gate, outcome.version) + baselines_section(gate)
        lines += ["### Decision", "", f"**{gate.alias}**: {gate.reason}", ""]
    lines += ["### Where to look", ""]
    lines += [f"- {name}: {where}" for name, where in outcome.links.items()]
    lines += [f"- this report: `{report}`", "", f"_{outcome.seconds:.0f} s in all._", ""]
    return "\n".join(lines) + "\n"


def headline(outcome: RetrainOutcome) -> str:
    version = f"v{outcome.version}" if outcome.version is not None else "the candidate"
    if outcome.status == "promoted":
        return f"trained {version}, promoted to champion"
    if outcome.status == "challenger":
        return f"trained {version}, kept as challenger"
    if outcome.status == "submitted":
        return f"submitted {outcome.submitted}"
    if outcome.status == "skipped":
        reason = outcome.decision.reason if outcome.decision else "skipped"
        return f"skipped ({reason})"
    return "failed"


def data_section(decision: RetrainDecision) -> list[str]:
    lines = [
        f"### Data: `{decision.source}`",
        "",
        f"{decision.n_images} images in {len(decision.class_counts)} classes, fingerprint "
        f"`{decision.fingerprint[:12]}`.",
        "",
    ]
    change = decision.change
    if change is None:
        return lines
    lines += [
        f"| class | champion v{decision.champion_version}'s data | now | added | removed |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {c.label} | {c.before} | {c.now} | +{c.added} | -{c.removed} |" for c in change.classes]
    lines += [""] + [f"- {r.count} relabelled {r.before} -> {r.now}" for r in change.relabelled]
    return [*lines, ""] if change.relabelled else lines


def comparison_section(gate: GateDecision, version: int | None) -> list[str]:
    word = METRIC_WORDS[gate.metric]
    candidate = f"v{version}" if version is not None else "the candidate"
    lines = [
        "### Candidate against the champion",
        "",
        f"| on the {gate.n_test} test images | {word} |",
        "|---|---:|",
        f"| candidate {candidate} | {gate.candidate_score:.4f} |",
        f"| always the most common class (chance) | {gate.chance_score:.4f} |",
        f"| the floor | {gate.floor:.4f} |",
    ]
    if gate.best_baseline is not None and gate.best_baseline_score is not None:
        lines.append(f"| best baseline ({gate.best_baseline}) | {gate.best_baseline_score:.4f} |")
    if gate.champion_version is not None and gate.champion_score is not None:
        shared = ""
        if gate.champion_train_overlap and gate.candidate_score_compared is not None:
            shared = f" (on the {gate.compared_on} it did not train on: candidate {gate.candidate_score_compared:.4f})"
        lines.append(f"| champion v{gate.champion_version}{shared} | {gate.champion_score:.4f} |")
    lines.append("")
    if gate.champion_score is not None and gate.candidate_score_compared is not None:
        lines += [f"Evidence: {describe_comparison(gate, word)}.", ""]
    elif gate.champion_version is None:
        lines += ["No champion to compare with.", ""]
    return lines


def baselines_section(gate: GateDecision) -> list[str]:
    if not gate.baselines:
        return []
    lines = ["### Baselines", "", "| baseline | accuracy | macro F1 |", "|---|---:|---:|"]
    for name, scores in sorted(gate.baselines.items()):
        lines.append(
            f"| {name} | {scores.get('accuracy', float('nan')):.4f} | {scores.get('macro_f1', float('nan')):.4f} |"
        )
    return [*lines, ""]
