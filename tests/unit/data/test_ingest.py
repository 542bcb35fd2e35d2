import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.images import snapshot

from cnnops.contracts.dataset import read_dataset_info, read_manifest
from cnnops.core.errors import CnnopsError
from cnnops.data.ingest import ingest_source
from cnnops.settings.config import build_config
from cnnops.settings.naming import default_model_name


def test_manifest_and_fingerprint(make_images, state_home, tmp_path):
    root = make_images(per_class=12)
    info = ingest_source(build_config(overrides={"data.source": str(root)}), tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds")
    assert list(manifest.columns) == [
        "path",
        "label",
        "sha256",
        "width",
        "height",
        "mode",
        "origin",
        "split",
        "phash",
        "group",
    ]
    assert set(manifest["split"]) == {""}  # a plain class-folder tree: the split step decides
    assert len(manifest) == 36 and info.classes == ["cross", "disc", "stripes"]
    assert (info.mode, info.height, info.width) == ("RGB", 16, 16)
    assert read_dataset_info(tmp_path / "ds").fingerprint == info.fingerprint
    again = ingest_source(build_config(overrides={"data.source": str(root)}), tmp_path / "ds2")
    assert again.fingerprint == info.fingerprint


def test_bad_files_are_quarantined_and_source_untouched(make_images, state_home, tmp_path):
    root = make_images(per_class=12)
    (root / "disc" / "notes.txt").write_text("not an image")
    (root / "disc" / "empty.png").write_bytes(b"")
    good = (root / "cross" / "cross_000.png").read_bytes()
    (root / "cross" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "stray.png").write_bytes(good)
    before = snapshot(root)
    info = ingest_source(build_config(overrides={"data.source": str(root)}), tmp_path / "ds")
    quarantine = pd.read_csv(tmp_path / "ds" / "quarantine.csv")
    assert info.n_quarantined == 4
    reasons = dict(zip(quarantine["path"].map(lambda p: p.rsplit("/", 1)[-1]), quarantine["reason"], strict=True))
    assert reasons["notes.txt"] == "not an image"
    assert reasons["empty.png"] == "empty file"
    assert reasons["truncated.png"].startswith("corrupt image")
    assert reasons["stray.png"] == "not inside a class folder"
    assert snapshot(root) == before


def test_exact_duplicates_dropped_and_conflicts_quarantined(make_images, state_home, tmp_path):
    root = make_images(per_class=12)
    shutil.copy(root / "disc" / "disc_000.png", root / "disc" / "copy_of_disc.png")
    shutil.copy(root / "cross" / "cross_001.png", root / "stripes" / "mislabelled.png")
    info = ingest_source(build_config(overrides={"data.source": str(root)}), tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds")
    assert manifest["sha256"].is_unique
    assert info.n_duplicates == 1
    assert len(manifest) == 36 - 1  # the conflicting original left too
    quarantine = pd.read_csv(tmp_path / "ds" / "quarantine.csv")
    assert quarantine["reason"].str.startswith("label conflict").sum() == 2


def test_nothing_decodable(tmp_path, state_home):
    for label in ("a", "b"):
        (tmp_path / "src" / label).mkdir(parents=True)
        (tmp_path / "src" / label / "x.jpg").write_text("nope")
    with pytest.raises(CnnopsError, match="no decodable image"):
        ingest_source(build_config(overrides={"data.source": str(tmp_path / "src")}), tmp_path / "ds")


@pytest.mark.parametrize(
    ("layout", "message"),
    [({}, "is empty"), ({"only": 3}, "one class only"), ({"a": 0, "b": 0}, "is empty")],
)
def test_folders_that_cannot_make_a_classifier(tmp_path, state_home, make_images, layout, message):
    root = tmp_path / "src"
    root.mkdir()
    for label, count in layout.items():
        (root / label).mkdir()
        for index in range(count):
            shutil.copy(
                make_images(per_class=1, classes=("disc",), seed=index, name=f"one{index}") / "disc" / "disc_000.png",
                root / label / f"{index}.png",
            )
    with pytest.raises(CnnopsError, match=message):
        ingest_source(build_config(overrides={"data.source": str(root)}), tmp_path / "ds")


def test_sources_resolve_to_distinct_model_names(tmp_path):
    (tmp_path / "a" / "faces").mkdir(parents=True)
    (tmp_path / "b" / "faces").mkdir(parents=True)
    assert default_model_name("demo:animals") == "cnnops-animals"
    assert default_model_name(str(tmp_path / "a" / "faces")) != default_model_name(str(tmp_path / "b" / "faces"))


@pytest.mark.parametrize(
    ("source", "message"), [("demo:unicorns", "unknown demo dataset"), ("/no/such/folder", "does not exist")]
)
def test_unresolvable_sources(source, message, state_home, tmp_path):
    with pytest.raises(CnnopsError, match=message):
        ingest_source(build_config(overrides={"data.source": source}), tmp_path / "ds")


def test_second_ingest_decodes_nothing_unchanged_and_rereads_what_changed(
    state_home, make_images, tmp_path, monkeypatch
):
    import os

    import cnnops.data.ingest as ingest_module
    from cnnops.contracts.dataset import read_manifest
    from cnnops.data.ingest import ingest_source
    from cnnops.settings.config import build_config

    source = make_images(per_class=12)
    config = build_config(overrides={"data.source": str(source)})
    first = ingest_source(config, tmp_path / "first")
    real_decode = ingest_module.decode_image
    decoded: list[int] = []

    def counting_decode(*args, **kwargs):
        decoded.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "decode_image", counting_decode)
    # Nothing changed: the earlier output is reused whole.
    second = ingest_source(config, tmp_path / "second")
    assert decoded == [] and second.fingerprint == first.fingerprint
    assert read_manifest(tmp_path / "second").equals(read_manifest(tmp_path / "first"))

    # One new file: only it is decoded; the others are known by content.
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(source / "disc" / "new.png")
    third = ingest_source(config, tmp_path / "third")
    assert len(decoded) == 1 and third.n_images == first.n_images + 1

    # A file rewritten with other bytes is read and decoded again; its new hash is in the manifest.
    changed = sorted((source / "disc").iterdir())[0]
    changed.write_bytes(sorted((source / "cross").iterdir())[0].read_bytes())  # now a copy of a cross image
    os.utime(changed, ns=(1, 1))
    fourth = ingest_source(config, tmp_path / "fourth")
    assert fourth.fingerprint != third.fingerprint
    assert fourth.n_quarantined == 2  # both copies, filed under disc and cross: a label conflict


def test_worker_processes_give_the_same_manifest_as_threads(state_home, make_images, tmp_path, monkeypatch):
    import shutil

    import cnnops.data.ingest as ingest_module
    from cnnops.contracts.dataset import read_manifest
    from cnnops.data.image_cache import cache_path
    from cnnops.settings.config import build_config

    source = make_images(per_class=12)
    (source / "disc" / "junk.png").write_bytes(b"junk")
    config = build_config(overrides={"data.source": str(source)})
    threads = ingest_module.ingest_source(config, tmp_path / "threads")
    shutil.rmtree(cache_path().parent)  # forget everything: decode again, this time in worker processes
    monkeypatch.setattr(ingest_module, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(ingest_module.os, "cpu_count", lambda: 2)
    processes = ingest_module.ingest_source(config, tmp_path / "processes")
    assert processes.fingerprint == threads.fingerprint
    assert read_manifest(tmp_path / "processes").equals(read_manifest(tmp_path / "threads"))
    assert processes.n_quarantined == threads.n_quarantined == 1
