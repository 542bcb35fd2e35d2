"""Whether a registered model should be retrained on its data source as it is now, and why.

The data a version was trained on is the dataset digest its training run logged as its
"training" input: the source's fingerprint, which changes exactly when an image or a label does.
The (sha256, label) pairs logged beside it (`SOURCE_LABELS_ARTIFACT`) give the change per class.

A retrain trains when the data changed since the champion's, when there is no champion, or when
forced. It skips when the newest version was trained on exactly this data, whichever alias it
earned: so two triggers for the same data never both train (the second finds the first's
version), and a candidate the gate kept as challenger is not trained again on the same images.
A cooldown keeps a model from being retrained more often than `retrain.cooldown_minutes`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from cnnops.contracts.dataset import SOURCE_LABELS_ARTIFACT, DatasetInfo, read_manifest, read_source_labels
from cnnops.contracts.records import Frozen, Record
from cnnops.core.errors import CnnopsError
from cnnops.data.ingest import ingest_source
from cnnops.settings.config import Config
from cnnops.settings.naming import CHAMPION, model_name_for
from cnnops.tracking.registry import find_alias
from cnnops.tracking.stores import lookup, store_faults, use_tracking_store

if TYPE_CHECKING:
    import pandas as pd

Reason = Literal[
    "unchanged", "data-changed", "forced", "no-champion", "cooldown", "drift", "no-drift", "drift-same-data"
]
# The registered model's tag holding when its last retrain started training (Unix seconds).
LAST_RETRAIN_TAG = "cnnops.retrain.last_started"
# How many characters of the fingerprint a training run's dataset input keeps as its digest.
DIGEST_CHARS = 32


class ClassChange(Frozen):
    """One class's images in the reference version's data and now."""

    label: str
    before: int
    now: int
    added: int
    removed: int


class Relabel(Frozen):
    """Images that are in both, under another label now."""

    before: str
    now: str
    count: int


class DataChange(Frozen):
    """What changed between the data a version was trained on and the source now, per class."""

    classes: list[ClassChange]
    relabelled: list[Relabel]

    def describe(self) -> str:
        parts = [f"+{c.added} in {c.label}" for c in self.classes if c.added]
        parts += [f"-{c.removed} in {c.label}" for c in self.classes if c.removed]
        parts += [f"{r.count} relabelled {r.before} -> {r.now}" for r in self.relabelled]
        return ", ".join(parts) or "no image added, removed or relabelled"

    def emptied(self) -> list[str]:
        """Classes the reference version knew that have no image now."""
        return [c.label for c in self.classes if c.before and not c.now]


class DriftReport(Frozen):
    """What the serving champion said of its traffic, for `retrain --if-drift`."""

    url: str
    status: str  # a DriftVerdict's status: drift, no-drift, too-few, no-reference
    reason: str
    p_value: float | None
    window_size: int

    @property
    def detected(self) -> bool:
        return self.status == "drift"


class RetrainDecision(Record):
    """Train or not, the reason (one of `Reason`) and the one line that says it, with the facts."""

    model: str
    source: str
    train: bool
    reason: Reason
    detail: str
    fingerprint: str
    n_images: int
    class_counts: dict[str, int]
    champion_version: int | None = None
    champion_fingerprint: str | None = None
    change: DataChange | None = None
    drift: DriftReport | None = None
    decided_at: str


def decide_retrain(
    config: Config,
    dataset_dir: Path,
    force: bool = False,
    now: float | None = None,
    drift: DriftReport | None = None,
) -> RetrainDecision:
    """Ingest the source into `dataset_dir` (an unchanged source comes from the ingest memo in
    seconds) and decide against the registry. A champion whose data cannot be compared, or a
    class the champion knows that has no image now, is a one-line error unless forced.

    Given the service's drift report (`--if-drift`), the report decides first: no retrain unless
    it says drift, and then only on data the newest version was not trained on (the same images
    would give the same model), the cooldown still holding."""
    info = ingest_source(config, dataset_dir)
    name = model_name_for(config, info.source)
    use_tracking_store()
    client = MlflowClient()
    with store_faults():
        champion = find_alias(client, name, CHAMPION)
        newest = newest_version(client, name)
        newest_digest = None if newest is None else training_digest(client, newest)
        digest = info.fingerprint[:DIGEST_CHARS]
        champion_digest = None if champion is None else training_digest(client, champion)
        change = None
        if champion is not None and champion_digest != digest:
            change = data_change(client, champion, read_manifest(dataset_dir))
        last = last_retrain(client, name)

    def decided(train: bool, reason: Reason, detail: str) -> RetrainDecision:
        return RetrainDecision(
            model=name,
            source=info.source,
            train=train,
            reason=reason,
            detail=detail,
            fingerprint=info.fingerprint,
            n_images=info.n_images,
            class_counts=info.class_counts,
            champion_version=None if champion is None else int(champion.version),
            champion_fingerprint=champion_digest,
            change=change,
            drift=drift,
            decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    if force:
        return decided(True, "forced", "--force: retrained whatever the data")
    moment = time.time() if now is None else now
    cooldown = config.retrain.cooldown_minutes * 60
    if drift is not None:
        if not drift.detected:
            return decided(False, "no-drift", f"{drift.url} reports {drift.status}: {drift.reason}")
        said = f"{drift.url} reports drift ({drift.reason})"
        if newest is not None and newest_digest == digest:
            return decided(
                False,
                "drift-same-data",
                f"{said}; but v{newest.version} was trained on exactly this data, and training on it again "
                "would learn nothing new: label served images (serve.keep_samples) into the source, or --force",
            )
        if champion is not None and champion_digest is not None:
            check_comparable(name, champion, champion_digest, change, info)
        data = change.describe() if change is not None else "images changed since the champion's"
        detail = f"{said}; {data}"
        if last is not None and moment - last < cooldown:
            return decided(False, "cooldown", cooled(detail, name, moment - last, config))
        return decided(True, "drift", detail)
    if newest is not None and newest_digest == digest:
        return decided(False, "unchanged", f"unchanged since v{newest.version} ({describe_standing(newest)})")
    if champion is None:
        return decided(True, "no-champion", f"{name} has no champion yet")
    check_comparable(name, champion, champion_digest, change, info)
    if champion_digest == digest:
        return decided(False, "unchanged", f"unchanged since champion v{champion.version}")
    detail = change.describe() if change is not None else "images changed (no per-class record on the champion's run)"
    if last is not None and moment - last < cooldown:
        return decided(False, "cooldown", cooled(detail, name, moment - last, config))
    return decided(True, "data-changed", detail)


def cooled(detail: str, name: str, ago_s: float, config: Config) -> str:
    return (
        f"{detail}; but {name} was retrained {ago_s / 60:.0f} min ago, within retrain.cooldown_minutes "
        f"{config.retrain.cooldown_minutes:g} (--force to retrain now)"
    )


def check_comparable(
    name: str, champion: ModelVersion, digest: str | None, change: DataChange | None, info: DatasetInfo
) -> None:
    """Refuse what a retrain cannot judge without being told: a champion with no data on record
    (an imported model), or a class of the champion's emptied in the source."""
    if digest is None:
        raise CnnopsError(
            f"champion v{champion.version} of {name} has no dataset digest on its training run (an imported "
            "model?), so there is no data to compare with; retrain with --force to train on the source as it is."
        )
    emptied = sorted(set(change.emptied() if change else []) | set(info.empty_classes))
    if emptied:
        raise CnnopsError(
            f"class {', '.join(emptied)} of champion v{champion.version} has no image in {info.source} now; "
            "restore its images, or retrain with --force to train without it."
        )


def newest_version(client: MlflowClient, name: str) -> ModelVersion | None:
    found = lookup(
        lambda: client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    )
    if not found:
        return None
    number = found[0].version  # a search leaves aliases out; a read of the version has them
    return lookup(lambda: client.get_model_version(name, number))


def training_digest(client: MlflowClient, version: ModelVersion) -> str | None:
    """The digest of the dataset a version's run logged as its training input; None when it logged
    none (an imported model) or the run is gone."""
    run_id = version.run_id
    run = None if not run_id else lookup(lambda: client.get_run(run_id))
    if run is None or run.inputs is None:
        return None
    for given in run.inputs.dataset_inputs:
        if any(tag.key == "mlflow.data.context" and tag.value == "training" for tag in given.tags):
            return str(given.dataset.digest)
    return None


def describe_standing(version: ModelVersion) -> str:
    aliases = list(version.aliases or [])
    return ", ".join(aliases) if aliases else "no alias"


def data_change(client: MlflowClient, version: ModelVersion, manifest: pd.DataFrame) -> DataChange | None:
    """The per-class change from the data `version` was trained on to `manifest`; None when its run
    logged no per-class record."""
    run_id = version.run_id
    if not run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="cnnops-retrain-") as scratch:
        path = lookup(lambda: client.download_artifacts(run_id, SOURCE_LABELS_ARTIFACT, scratch))
        if path is None:
            return None
        before = read_source_labels(Path(path))
    return compare_labels(before, manifest[["sha256", "label"]])


def compare_labels(before: pd.DataFrame, now: pd.DataFrame) -> DataChange:
    """Added, removed and relabelled images between two (sha256, label) tables."""
    merged = before.merge(now, on="sha256", how="outer", suffixes=("_before", "_now"), indicator=True)
    added = merged[merged["_merge"] == "right_only"]["label_now"].value_counts()
    removed = merged[merged["_merge"] == "left_only"]["label_before"].value_counts()
    both = merged[merged["_merge"] == "both"]
    moved = both[both["label_before"] != both["label_now"]]
    counts_before, counts_now = before["label"].value_counts(), now["label"].value_counts()
    labels = sorted(set(counts_before.index) | set(counts_now.index))
    return DataChange(
        classes=[
            ClassChange(
                label=str(label),
                before=int(counts_before.get(label, 0)),
                now=int(counts_now.get(label, 0)),
                added=int(added.get(label, 0)),
                removed=int(removed.get(label, 0)),
            )
            for label in labels
        ],
        relabelled=[
            Relabel(before=str(old), now=str(new), count=int(count))
            for (old, new), count in sorted(moved.groupby(["label_before", "label_now"]).size().items())
        ],
    )


def last_retrain(client: MlflowClient, name: str) -> float | None:
    """When the model's last retrain started training (Unix seconds); None before the first."""
    model = lookup(lambda: client.get_registered_model(name))
    raw = None if model is None else model.tags.get(LAST_RETRAIN_TAG)
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def mark_retrain_started(name: str) -> None:
    """Start the model's cooldown; a model not registered yet has none to start."""
    use_tracking_store()
    client = MlflowClient()
    with store_faults():
        if lookup(lambda: client.get_registered_model(name)) is not None:
            client.set_registered_model_tag(name, LAST_RETRAIN_TAG, f"{time.time():.3f}")
