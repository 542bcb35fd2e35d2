"""Validate: image-specific checks over an ingested dataset before it is split, a verdict (pass,
warn or fail) by configurable thresholds, and a human report.

It reads the ingest output (manifest, quarantine and duplicate lists), groups near-duplicates by
perceptual hash so `split` can keep each group in one split, and writes a dataset folder of the
same contract plus `validation.json` and `report.html`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from cnnops.contracts.dataset import (
    SPLIT_PLAN_FILE,
    VALIDATION_FILE,
    ChannelStats,
    Check,
    DatasetInfo,
    NearDuplicateGroup,
    NumberSummary,
    SizeCount,
    SizeStats,
    SplitPlan,
    ValidationReport,
    Verdict,
    read_dataset_info,
    read_manifest,
    read_validation,
    write_dataset,
    write_split_plan,
    write_validation,
)
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError, ImageDecodeError
from cnnops.core.memo import new_digest, restore, store
from cnnops.data.images import decode_image
from cnnops.settings.config import Config

STATS_SAMPLE = 2000  # images decoded for the per-channel mean and std
VERDICTS: tuple[Verdict, ...] = ("pass", "warn", "fail")


VALIDATE_OUTPUTS = [
    "manifest.parquet",
    "dataset.json",
    "quarantine.csv",
    "duplicates.csv",
    VALIDATION_FILE,
    "report.html",
    SPLIT_PLAN_FILE,
]


def validate_dataset(dataset_dir: Path, out_dir: Path, config: Config, track: bool = True) -> ValidationReport:
    """Check an ingested dataset; write the grouped dataset, `validation.json` and `report.html`,
    and (with `track`) log them with the dataset to a `validate` MLflow run. The same ingest
    output under the same settings reuses an earlier validation's files.

    A fail verdict raises CnnopsError naming the report, after the report is written.
    """
    key = validation_key(dataset_dir, config)
    if restore("validate", key, out_dir, VALIDATE_OUTPUTS):
        say("validate: the dataset and settings are unchanged since an earlier validation; its results are reused")
        validation = read_validation(out_dir)
    else:
        validation = check_dataset(dataset_dir, out_dir, config)
        store("validate", key, out_dir, VALIDATE_OUTPUTS)
    report = out_dir / "report.html"
    for check in validation.checks:
        if check.status != "pass":
            say(f"validate: {check.status}: {check.name}: {check.detail}")
    if track:
        log_validation(validation, read_manifest(out_dir), read_dataset_info(out_dir), out_dir, report, config)
    say(f"validate: verdict {validation.verdict}; report {report}")
    if validation.verdict == "fail":
        failed = "; ".join(c.detail for c in validation.checks if c.status == "fail")
        raise CnnopsError(f"the dataset failed validation ({failed}); see {report}")
    return validation


def validation_key(dataset_dir: Path, config: Config) -> str:
    """A digest of the ingest output's files and of every setting validation (and the split plan
    it reports on) reads."""
    digest = new_digest("validate")
    for name in ("manifest.parquet", "dataset.json", "quarantine.csv", "duplicates.csv"):
        path = dataset_dir / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"\0missing"))
    settings = {"validation": config.validation.model_dump(), "split": config.split.model_dump(), "seed": config.seed}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def check_dataset(dataset_dir: Path, out_dir: Path, config: Config) -> ValidationReport:
    """Run the checks and write the validated dataset, `validation.json` and `report.html`."""
    from cnnops.data.report import write_report

    manifest = read_manifest(dataset_dir)
    info = read_dataset_info(dataset_dir)
    quarantine = read_table(dataset_dir / "quarantine.csv", ["path", "label", "reason"])
    duplicates = read_table(dataset_dir / "duplicates.csv", ["path", "label", "duplicate_of"])
    manifest = manifest.assign(group=group_near_duplicates(manifest, config.validation.near_duplicate_bits))
    groups = describe_groups(manifest)
    checks = run_checks(manifest, info, quarantine, duplicates, groups, config)
    verdict: Verdict = max((c.status for c in checks), key=VERDICTS.index, default="pass")
    plan = plan_split(manifest, config)
    validation = ValidationReport(
        verdict=verdict,
        checks=checks,
        source=info.source,
        fingerprint=info.fingerprint,
        n_images=len(manifest),
        class_counts=info.class_counts,
        n_quarantined=len(quarantine),
        n_duplicates=len(duplicates),
        near_duplicate_groups=groups,
        near_duplicate_groups_moved=None if plan is None else plan.moved,
        sizes=size_stats(manifest),
        channels=channel_stats(manifest, info.mode, config.seed),
    )
    write_dataset(out_dir, manifest, info.model_copy(update={"verdict": verdict}))
    quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    duplicates.to_csv(out_dir / "duplicates.csv", index=False)
    write_validation(out_dir, validation)
    (out_dir / SPLIT_PLAN_FILE).unlink(missing_ok=True)
    if plan is not None:
        write_split_plan(out_dir, plan)
    write_report(out_dir / "report.html", validation, manifest, quarantine, duplicates)
    return validation


def log_validation(
    validation: ValidationReport,
    manifest: pd.DataFrame,
    info: DatasetInfo,
    out_dir: Path,
    report: Path,
    config: Config,
) -> None:
    """A `validate` run in the model's MLflow experiment: the verdict, the report, and the dataset."""
    import mlflow

    from cnnops.tracking.provenance import provenance_tags
    from cnnops.tracking.stores import log_dataset, open_model_experiment

    name, experiment_id = open_model_experiment(config, info.source)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"validate-{info.fingerprint[:12]}"):
        mlflow.set_tags(
            {
                "cnnops.step": "validate",
                "cnnops.verdict": validation.verdict,
                **provenance_tags(info, config, name),
            }
        )
        mlflow.log_metrics(
            {
                "n_images": validation.n_images,
                "n_quarantined": validation.n_quarantined,
                "n_duplicates": validation.n_duplicates,
                "n_near_duplicate_groups": len(validation.near_duplicate_groups),
            }
        )
        log_dataset(manifest, info, out_dir, context="validation")
        mlflow.log_artifact(str(report), "validation")
        mlflow.log_dict(validation.model_dump(mode="json"), "validation/validation.json")


def plan_split(manifest: pd.DataFrame, config: Config) -> SplitPlan | None:
    """The split `split` will apply (its near-duplicate groups moved whole); None when it cannot
    be planned yet (the split step then says why)."""
    from cnnops.data.split import plan_splits

    try:
        return plan_splits(manifest, config)
    except CnnopsError:
        return None


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def group_near_duplicates(manifest: pd.DataFrame, max_bits: int) -> pd.Series:
    """A group id per image whose perceptual hash is within `max_bits` of its group's leader (the
    earliest such image that leads no other group); "" for an image with no near-duplicate.

    Groups form around a leader, without chaining: A near B near C does not put A with C, which on
    small images would sweep whole classes together. Candidate pairs come from splitting the
    64-bit hash into max_bits + 1 blocks: hashes within max_bits differ in at most max_bits blocks,
    so they agree on at least one (pigeonhole). Only images sharing a block are compared, in
    vectorised chunks.
    """
    hashes = np.array([int(h, 16) for h in manifest["phash"]], dtype=np.uint64)
    close = close_pairs(hashes, max_bits)
    leader = np.arange(len(hashes))
    for j, earlier in sorted(close.items()):
        leaders = [i for i in earlier if leader[i] == i]
        if leaders:
            leader[j] = min(leaders)
    sizes = Counter(leader.tolist())
    names = {lead: f"g{n:05d}" for n, lead in enumerate(sorted(k for k, v in sizes.items() if v > 1))}
    return pd.Series([names.get(lead, "") for lead in leader.tolist()], index=manifest.index, dtype=object)


def close_pairs(hashes: np.ndarray, max_bits: int, chunk: int = 512) -> dict[int, list[int]]:
    """For each image, the earlier images whose hash is within max_bits of its own."""
    blocks = max_bits + 1
    width = math.ceil(64 / blocks)
    found: dict[int, set[int]] = defaultdict(set)
    for block in range(blocks):
        bits = min(width, 64 - block * width)
        keys = (hashes >> np.uint64(block * width)) & np.uint64((1 << bits) - 1)
        order = np.argsort(keys, kind="stable")
        edges = np.flatnonzero(np.diff(keys[order])) + 1
        for members in np.split(order, edges):
            if len(members) < 2:
                continue
            members = np.sort(members)
            member_hashes = hashes[members]
            for start in range(0, len(members), chunk):
                rows = members[start : start + chunk]
                distance = np.bitwise_count(member_hashes[start : start + chunk, None] ^ member_hashes[None, :])
                near = (distance <= max_bits) & (rows[:, None] > members[None, :])
                for r, c in zip(*np.nonzero(near), strict=True):
                    found[int(rows[r])].add(int(members[c]))
    return {j: sorted(earlier) for j, earlier in found.items()}


def describe_groups(manifest: pd.DataFrame) -> list[NearDuplicateGroup]:
    """Each near-duplicate group's files and labels."""
    members = manifest.loc[manifest["group"] != "", ["group", "path", "label"]]
    grouped = members.groupby("group", sort=True).agg(paths=("path", list), labels=("label", set))
    return [
        NearDuplicateGroup(group=str(name), paths=list(row.paths), labels=sorted(row.labels))
        for name, row in zip(grouped.index, grouped.itertuples(), strict=True)
    ]


def run_checks(
    manifest: pd.DataFrame,
    info: DatasetInfo,
    quarantine: pd.DataFrame,
    duplicates: pd.DataFrame,
    groups: list[NearDuplicateGroup],
    config: Config,
) -> list[Check]:
    """Each check's status (pass/warn/fail) and one line saying why."""
    rules = config.validation
    counts = manifest["label"].value_counts()
    n_files = len(manifest) + len(quarantine) + len(duplicates)
    checks: list[Check] = []

    def check(name: str, status: Verdict, detail: str) -> None:
        checks.append(Check(name=name, status=status, detail=detail))

    small = counts[counts < rules.min_images_per_class]
    check(
        "class size",
        "fail" if len(small) else "pass",
        f"{', '.join(f'{k} has {v}' for k, v in small.items())}; each class needs {rules.min_images_per_class}"
        if len(small)
        else f"every class has at least {rules.min_images_per_class} images (smallest {counts.min()})",
    )
    ratio = counts.max() / counts.min()
    check(
        "class balance",
        "warn" if ratio > rules.max_imbalance else "pass",
        f"largest class '{counts.idxmax()}' has {counts.max()} images, smallest '{counts.idxmin()}' "
        f"{counts.min()}: {ratio:.1f}x (warn above {rules.max_imbalance:g}x)",
    )
    share = len(quarantine) / n_files if n_files else 0.0
    status: Verdict = (
        "fail" if share > rules.max_quarantined_fail else "warn" if share > rules.max_quarantined_warn else "pass"
    )
    reasons = Counter(r.split(":")[0] for r in quarantine["reason"])
    check(
        "quarantine",
        status,
        f"{len(quarantine)} of {n_files} files ({share:.1%}) quarantined"
        + (f": {', '.join(f'{n} {r}' for r, n in reasons.most_common(3))}" if len(quarantine) else ""),
    )
    conflicts = int(quarantine["reason"].str.startswith("label conflict").sum())
    check(
        "label conflicts",
        "warn" if conflicts else "pass",
        f"{conflicts} files hold an image also filed under another label" if conflicts else "none",
    )
    mixed = [g for g in groups if len(g.labels) > 1]
    near = sum(len(g.paths) for g in groups)
    check(
        "near duplicates",
        "warn" if mixed or near > rules.max_near_duplicate_share * len(manifest) else "pass",
        f"{len(groups)} groups ({near} images) within {rules.near_duplicate_bits} bits of perceptual hash; "
        f"{len(mixed)} mix labels; each group is kept in one split",
    )
    check("exact duplicates", "pass", f"{len(duplicates)} dropped before the split")
    empty = info.empty_classes
    check(
        "empty classes",
        "warn" if empty else "pass",
        f"class folders with no usable image, left out: {', '.join(empty)}" if empty else "none",
    )
    return checks


def size_stats(manifest: pd.DataFrame) -> SizeStats:
    aspect = manifest["width"] / manifest["height"]
    return SizeStats(
        width=describe_numbers(manifest["width"]),
        height=describe_numbers(manifest["height"]),
        aspect=describe_numbers(aspect),
        most_common=[
            SizeCount(size=f"{w}x{h}", count=int(n))
            for (w, h), n in Counter(zip(manifest["width"], manifest["height"], strict=True)).most_common(5)
        ],
    )


def describe_numbers(values: pd.Series) -> NumberSummary:
    return NumberSummary(
        min=float(values.min()), median=float(values.median()), max=float(values.max()), mean=float(values.mean())
    )


def channel_stats(manifest: pd.DataFrame, mode: str, seed: int) -> ChannelStats:
    """Per-channel mean and std of pixel values in [0, 1], from up to STATS_SAMPLE images decoded
    in the dataset's mode (streamed: one image in memory at a time)."""
    sample = manifest.sample(n=min(STATS_SAMPLE, len(manifest)), random_state=seed)
    channels = 1 if mode == "L" else 3
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for path in sample["path"]:
        try:
            pixels = decode_image(Path(path).read_bytes(), mode).pixels.astype(np.float64) / 255.0
        except (OSError, ImageDecodeError):
            continue
        flat = pixels.reshape(-1, channels)
        total += flat.sum(axis=0)
        squares += (flat**2).sum(axis=0)
        count += len(flat)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0.0))
    names = ["grey"] if channels == 1 else ["red", "green", "blue"]
    return ChannelStats(
        sampled_images=len(sample),
        mean=dict(zip(names, mean.round(4).tolist(), strict=True)),
        std=dict(zip(names, std.round(4).tolist(), strict=True)),
    )
