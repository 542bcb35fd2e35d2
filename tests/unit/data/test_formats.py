"""Every source format through the same ingest and manifest: class folders nested at any depth, a
CSV or parquet table, Quick, Draw! .npy files, DataFrames, and archives, extracted safely."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.images import TINY_CLASSES, draw, snapshot, write_images

from cnnops.contracts.dataset import read_manifest
from cnnops.core.errors import CnnopsError
from cnnops.data.ingest import ingest_source
from cnnops.settings.config import build_config


def ingest(source, tmp_path: Path, **overrides) -> tuple[dict, pd.DataFrame]:
    config = build_config(overrides={"data.source": str(source), **overrides})
    out = tmp_path / "dataset"
    info = ingest_source(config, out)
    return info, read_manifest(out)


def quarantined(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "dataset" / "quarantine.csv")


def test_class_folders_nested_at_any_depth(state_home, tmp_path):
    root = write_images(tmp_path / "images", per_class=4)
    deep = root / "disc" / "2024" / "june" / "batch 1"
    deep.mkdir(parents=True)
    Image.fromarray(draw("disc", np.random.default_rng(9))).save(deep / "deep.png")
    info, manifest = ingest(root, tmp_path)
    assert info.class_counts == {"cross": 4, "disc": 5, "stripes": 4}
    assert any(path.endswith("batch 1/deep.png") for path in manifest["path"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_path_table_relative_to_itself(state_home, tmp_path, suffix):
    root = write_images(tmp_path / "store" / "all", per_class=3)
    rows = [
        {"path": str(p.relative_to(tmp_path / "store")), "label": p.parent.name} for p in sorted(root.rglob("*.png"))
    ]
    rows += [
        {"path": "all/missing.png", "label": "disc"},
        {"path": f"file://{root / 'cross' / 'cross_000.png'}", "label": "cross"},
        {"path": "https://example.org/x.png", "label": "disc"},
    ]
    table = tmp_path / "store" / f"labels{suffix}"
    frame = pd.DataFrame(rows)
    frame.to_csv(table, index=False) if suffix == ".csv" else frame.to_parquet(table)
    before = snapshot(tmp_path / "store")
    info, manifest = ingest(table, tmp_path)
    assert info.origin == "manifest" and info.classes == sorted(TINY_CLASSES)
    assert len(manifest) == 9  # the file:// row names a file already listed: read once
    reasons = dict(
        zip(quarantined(tmp_path)["path"].map(lambda p: Path(p).name), quarantined(tmp_path)["reason"], strict=True)
    )
    assert reasons["missing.png"] == "listed in the table but not found"
    assert reasons["x.png"].startswith("not a local file")
    assert snapshot(tmp_path / "store") == before


def test_quickdraw_npy_files_with_a_per_class_cap(state_home, tmp_path):
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("full_numpy_bitmap_cat", "dog"):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (15, 784), dtype=np.uint8))
    info, manifest = ingest(folder, tmp_path, **{"data.max_per_class": "10"})
    assert info.origin == "npy" and info.class_counts == {"cat": 10, "dog": 10}
    assert (info.height, info.width, info.mode) == (28, 28, "L")
    # Written out once: the same files and cap reuse it; another cap is another copy.
    (written,) = (state_home / "data").glob("npy-*")
    stamp = (written / ".complete").stat().st_mtime_ns
    ingest(folder, tmp_path / "again", **{"data.max_per_class": "10"})
    assert (written / ".complete").stat().st_mtime_ns == stamp
    _, uncapped = ingest(folder, tmp_path / "all")
    assert len(uncapped) == 30


def test_npy_that_is_not_bitmaps_is_refused(state_home, tmp_path):
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    np.save(folder / "cat.npy", np.zeros((3, 10), np.uint8))
    np.save(folder / "dog.npy", np.zeros((3, 784), np.uint8))
    with pytest.raises(CnnopsError, match="N x 784"):
        ingest(folder, tmp_path)


def image_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for kind in TINY_CLASSES:
        for _ in range(4):
            rows.append({"image": draw(kind, rng), "label": kind})
    buffer = io.BytesIO()
    Image.fromarray(draw("disc", rng)).save(buffer, "JPEG")
    rows.append({"image": buffer.getvalue(), "label": "disc"})
    rows.append({"image": np.linspace(0, 1, 256).reshape(16, 16), "label": "cross"})  # floats in [0, 1]
    return pd.DataFrame(rows)


def test_dataframe_parquet_needs_no_flag(state_home, tmp_path):
    """Parquet stores arrays as flat lists: 16x16 grey images come back as 256 values each."""
    rng = np.random.default_rng(2)
    labels = [kind for kind in TINY_CLASSES for _ in range(4)]
    grey = [np.asarray(Image.fromarray(draw(kind, rng)).convert("L")).ravel() for kind in labels]
    path = tmp_path / "frame.parquet"
    pd.DataFrame({"pixels": grey, "class": labels}).to_parquet(path)
    info, _ = ingest(path, tmp_path)
    assert info.origin == "dataframe" and info.class_counts == {"cross": 4, "disc": 4, "stripes": 4}
    assert (info.height, info.width, info.mode) == (16, 16, "L")


def test_dataframe_pickle_is_refused_without_trust_and_read_with_it(state_home, tmp_path):
    path = tmp_path / "frame.pkl"
    image_frame().to_pickle(path)
    with pytest.raises(CnnopsError, match="only with --trust-pickle"):
        ingest(path, tmp_path)
    assert not (state_home / "data").exists() or not list((state_home / "data").glob("dataframe-*"))
    info, manifest = ingest(path, tmp_path, **{"data.trust_pickle": "true"})
    assert info.class_counts == {"cross": 5, "disc": 5, "stripes": 4}
    assert info.mode == "RGB"  # the arrays are RGB; the float one and the JPEG join them


def test_pickle_of_something_else_is_refused(state_home, tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CnnopsError, match="not a pandas DataFrame"):
        ingest(path, tmp_path, **{"data.trust_pickle": "true"})


def tree_files(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(root.parent)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_archives_of_a_tree(state_home, tmp_path, kind):
    root = write_images(tmp_path / "images", per_class=3)
    archive = tmp_path / f"images.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in tree_files(root):
                z.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(root, arcname="images")
    info, manifest = ingest(archive, tmp_path)
    assert info.origin == "archive" and info.class_counts == {"cross": 3, "disc": 3, "stripes": 3}
    assert all(str(state_home) in path for path in manifest["path"])


def test_archive_entry_escaping_the_target_refuses_the_archive(state_home, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("images/cat/a.png", b"x")
        z.writestr("../../outside.png", b"x")
    with pytest.raises(CnnopsError, match="would land outside the extraction folder"):
        ingest(archive, tmp_path)
    assert not (tmp_path / "outside.png").exists() and not (tmp_path.parent / "outside.png").exists()
    assert not list((state_home / "data").glob("archive-*"))


def test_archive_with_a_link_or_over_the_size_bound_is_refused(state_home, tmp_path, monkeypatch):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as t:
        info = tarfile.TarInfo("images/cat/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(CnnopsError, match="a link or special file"):
        ingest(archive, tmp_path)

    import cnnops.data.formats as formats

    monkeypatch.setattr(formats, "MAX_ARCHIVE_BYTES", 1000)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("images/cat/zeros.png", b"\0" * 5000)
    with pytest.raises(CnnopsError, match="expands to more than 1000 bytes"):
        ingest(big, tmp_path)


def test_unknown_file_kind_is_a_clear_error(state_home, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CnnopsError, match="cannot read as data"):
        ingest(path, tmp_path)


def test_pre_split_tree_keeps_its_split(state_home, tmp_path):
    from cnnops.data.split import SPLITS, split_dataset

    root = tmp_path / "presplit"
    for folder, count, seed in (("train", 6, 1), ("validation", 2, 2), ("test", 3, 3)):
        write_images(root / folder, per_class=count, seed=seed)
    (root / "train" / "README.txt").write_text("not an image")
    info, manifest = ingest(root, tmp_path)
    assert info.origin == "pre-split"
    assert manifest.groupby("split").size().to_dict() == {"test": 9, "train": 18, "val": 6}
    config = build_config(overrides={"data.source": str(root)})
    counts = split_dataset(tmp_path / "dataset", {name: tmp_path / name for name in SPLITS}, config)
    assert counts == {"train": 18, "val": 6, "test": 9}
    test = read_manifest(tmp_path / "test")
    assert all("/test/" in path for path in test["path"])
    reasons = quarantined(tmp_path)
    assert (
        reasons.loc[reasons["path"].str.endswith("README.txt"), "reason"].item()
        == "not inside a class folder of train/"
    )


def test_pre_split_tree_with_an_empty_split_is_refused(state_home, tmp_path):
    from cnnops.data.split import SPLITS, split_dataset

    root = tmp_path / "presplit"
    write_images(root / "train", per_class=4)
    write_images(root / "test", per_class=2, seed=5)
    (root / "val").mkdir()
    ingest(root, tmp_path)
    config = build_config(overrides={"data.source": str(root)})
    with pytest.raises(CnnopsError, match="no usable image in val/"):
        split_dataset(tmp_path / "dataset", {name: tmp_path / name for name in SPLITS}, config)


def test_archive_of_a_pre_split_tree_keeps_its_split(state_home, tmp_path):
    root = tmp_path / "data"
    for folder, count, seed in (("train", 4, 1), ("val", 1, 2), ("test", 1, 3)):
        write_images(root / folder, per_class=count, seed=seed)
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(root, arcname="data")
    info, manifest = ingest(archive, tmp_path)
    assert info.origin == "pre-split"
    assert manifest.groupby("split").size().to_dict() == {"test": 3, "train": 12, "val": 3}
