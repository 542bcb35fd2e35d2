"""The validate step: near-duplicate groups that never straddle splits, verdicts by thresholds, the
report, and the MLflow record; plus the awkward files ingest must survive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.images import draw, snapshot, write_images

import cnnops
from cnnops.contracts.dataset import ValidationReport, read_manifest, read_split_plan
from cnnops.core.errors import CnnopsError
from cnnops.data.images import perceptual_hash
from cnnops.data.ingest import ingest_source
from cnnops.data.split import SPLITS, split_dataset
from cnnops.data.validate import group_near_duplicates, validate_dataset
from cnnops.settings.config import build_config
from cnnops.tracking.provenance import config_hash


def run(source: Path, tmp_path: Path, **overrides) -> tuple[ValidationReport, Path]:
    config = build_config(overrides={"data.source": str(source), **overrides})
    ingest_source(config, tmp_path / "dataset")
    return validate_dataset(tmp_path / "dataset", tmp_path / "validated", config), tmp_path / "validated"


def test_perceptual_hash_is_near_for_copies_and_far_for_others():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    brighter = np.clip(image.astype(int) + 12, 0, 255).astype(np.uint8)
    smaller = np.asarray(Image.fromarray(image).resize((48, 48)))
    other = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def bits(a, b):
        return (int(perceptual_hash(a), 16) ^ int(perceptual_hash(b), 16)).bit_count()

    assert bits(image, brighter) <= 3 and bits(image, smaller) <= 3
    assert bits(image, other) > 16


def test_groups_form_around_a_leader_without_chaining():
    base = 0
    hashes = [f"{base:016x}", f"{0b111:016x}", f"{0b111111:016x}", f"{0xFFFF_FFFF_0000_0000:016x}"]
    groups = group_near_duplicates(pd.DataFrame({"phash": hashes}), 3)
    # 0b111 is 3 bits from 0; 0b111111 is 3 bits from 0b111 but 6 from 0: no chain to the leader.
    assert groups[0] == groups[1] != "" and groups[2] == "" and groups[3] == ""


def write_near_duplicates(root: Path, pairs: int) -> None:
    """Images with a re-encoded, slightly brighter copy each, in the same class folder."""
    rng = np.random.default_rng(4)
    for label in ("disc", "cross", "stripes"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(pairs):
            pixels = np.asarray(Image.fromarray(draw(label, rng)).resize((48, 48), Image.Resampling.NEAREST))
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")
            brighter = np.clip(pixels.astype(int) + 8, 0, 255).astype(np.uint8)
            Image.fromarray(brighter).save(folder / f"{index:03d}-copy.jpg", quality=95)


def test_near_duplicate_groups_never_straddle_splits(state_home, tmp_path):
    source = tmp_path / "images"
    write_near_duplicates(source, pairs=20)
    validation, validated = run(source, tmp_path)
    groups = validation.near_duplicate_groups
    assert len(groups) >= 50  # most of the 60 image/copy pairs are found
    assert validation.near_duplicate_groups_moved > 0  # a plain split would have leaked some
    config = build_config(overrides={"data.source": str(source)})
    split_dataset(validated, {name: tmp_path / name for name in SPLITS}, config)
    where = {path: name for name in SPLITS for path in read_manifest(tmp_path / name)["path"]}
    for group in groups:
        assert len({where[path] for path in group.paths}) == 1, group
    # The split applied the plan validation checked, image by image.
    plan = read_split_plan(validated)
    assert plan is not None and plan.moved == validation.near_duplicate_groups_moved
    by_hash = {sha: name for name in SPLITS for sha in read_manifest(tmp_path / name)["sha256"]}
    assert by_hash == plan.assignment
    assert (
        json.loads((tmp_path / "test" / "dataset.json").read_text())["near_duplicate_groups_moved"]
        == validation.near_duplicate_groups_moved
    )


def test_a_clean_dataset_passes_and_is_logged_to_mlflow(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=12)
    validation, validated = run(source, tmp_path)
    assert validation.verdict == "pass", validation.checks
    assert validation.channels.mean.keys() == {"red", "green", "blue"}
    report = (validated / "report.html").read_text()
    for section in ("Class balance", "Samples", "Image sizes", "Quarantined files", "Near-duplicate groups"):
        assert section in report
    assert "data:image/png;base64," in report and "http" not in report.split("<body>")[1]  # self-contained
    (run_record,) = mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string="tags.`cnnops.step` = 'validate'"
    )
    assert run_record.data.tags["cnnops.verdict"] == "pass"
    assert run_record.inputs.dataset_inputs[0].dataset.digest == validation.fingerprint[:32]
    # The same provenance as every other cnnops run: data, code, version, settings.
    tags = run_record.data.tags
    assert tags["cnnops.dataset_fingerprint"] == validation.fingerprint and tags["cnnops.data_source"] == str(source)
    assert tags["cnnops.config_hash"] == config_hash(build_config(overrides={"data.source": str(source)}))
    assert tags["cnnops.version"] == cnnops.__version__ and tags["cnnops.git_commit"]
    assert tags["cnnops.pipeline_run"] == "manual" and tags["cnnops.registered_model"]


def test_imbalance_warns_and_a_small_class_fails_with_the_report(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=12)
    for extra in range(12, 140):
        Image.fromarray(draw("disc", np.random.default_rng(extra))).save(source / "disc" / f"more-{extra}.png")
    validation, _ = run(source, tmp_path)
    assert validation.verdict == "warn"
    assert next(c for c in validation.checks if c.name == "class balance").status == "warn"

    failed = "failed validation .cross has 12, stripes has 12; each class needs 20.*report.html"
    with pytest.raises(CnnopsError, match=failed):
        run(source, tmp_path / "strict", **{"validation.min_images_per_class": "20"})
    assert (tmp_path / "strict" / "validated" / "report.html").is_file()


def test_quarantine_share_decides_warn_and_fail(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=12)
    for index in range(3):
        (source / "cross" / f"broken-{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    validation, _ = run(source, tmp_path)
    assert next(c for c in validation.checks if c.name == "quarantine").status == "warn"
    with pytest.raises(CnnopsError, match="quarantined"):
        run(source, tmp_path / "strict", **{"validation.max_quarantined_fail": "0.05"})


def test_awkward_files_never_crash_ingest_and_all_show_in_the_report(state_home, tmp_path, monkeypatch):
    source = write_images(tmp_path / "images", per_class=12)
    odd = source / "Große Katze ünïcode"
    odd.mkdir()
    rng = np.random.default_rng(8)
    for index in range(12):
        Image.fromarray(draw("cross", rng)).save(odd / f"photo {index}.PNG")  # spaces, mixed-case suffix
    (source / "disc" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (source / "disc" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbs")
    (source / "empty-class").mkdir()
    jpeg_named_png = source / "stripes" / "really-a-jpeg.png"
    Image.fromarray(draw("stripes", rng)).save(jpeg_named_png, "JPEG")
    (source / "stripes" / "nested.zip").write_bytes(b"PK\x03\x04 nested archive")
    os.symlink(source / "stripes", source / "stripes" / "loop")
    locked = source / "cross" / "locked.png"
    Image.fromarray(draw("cross", rng)).save(locked)
    locked.chmod(0)
    before = snapshot(source)
    real_read = Path.read_bytes

    def read_as_a_user(path: Path) -> bytes:  # the tests run as root, whom chmod 0 does not stop
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_as_a_user)
    validation, validated = run(source, tmp_path)
    monkeypatch.undo()
    manifest = read_manifest(validated)
    assert str(jpeg_named_png) in set(manifest["path"])  # decoded by content, not by its suffix
    assert (manifest["label"] == "Große Katze ünïcode").sum() == 12
    quarantine = pd.read_csv(validated / "quarantine.csv")
    reasons = dict(zip(quarantine["path"].map(lambda p: Path(p).name), quarantine["reason"], strict=True))
    assert reasons["Thumbs.db"] == "not an image"
    assert reasons["nested.zip"].startswith("archive inside the source (not extracted)")
    assert reasons["locked.png"] == "unreadable: Permission denied"
    assert ".DS_Store" not in reasons  # hidden files are skipped, not quarantined
    report = (validated / "report.html").read_text()
    for shown in ("nested.zip", "locked.png", "Thumbs.db", "Große Katze ünïcode", "empty-class"):
        assert shown in report, shown
    assert json.loads((tmp_path / "dataset" / "dataset.json").read_text())["empty_classes"] == ["empty-class"]
    assert snapshot(source) == before


def test_data_report_command_writes_the_report_only(state_home, tmp_path):
    source = write_images(tmp_path / "images", per_class=12)
    out = tmp_path / "report.html"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cnnops"), "data", "report", str(source), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )
    assert done.returncode == 0, done.stderr
    assert "Dataset report" in out.read_text()
    assert not (state_home / "mlflow").exists()  # a standalone report records nothing


def test_unchanged_dataset_and_settings_reuse_the_validation(state_home, tmp_path, monkeypatch):
    import cnnops.data.validate as validate_module

    source = write_images(tmp_path / "images", per_class=12)
    first, _ = run(source, tmp_path / "first")

    def no_checking(*args, **kwargs):
        raise AssertionError("an unchanged dataset was checked again")

    with monkeypatch.context() as patch:
        patch.setattr(validate_module, "check_dataset", no_checking)
        again, validated = run(source, tmp_path / "again")
    assert again == first and (validated / "report.html").is_file()
    stricter, _ = run(source, tmp_path / "stricter", **{"validation.max_imbalance": "1.0"})
    assert stricter.checks != first.checks  # another setting: checked anew
