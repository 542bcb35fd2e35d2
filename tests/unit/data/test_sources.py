import numpy as np
import pytest
from PIL import Image

from cnnops.data.sources import ANIMAL_CLASSES, list_class_files, materialize_demo, resolve_source


def test_demo_animals_is_written_once_as_class_folders(state_home):
    source = resolve_source("demo:animals")
    files = list_class_files(source.root)
    assert sorted(files) == ANIMAL_CLASSES
    assert {len(paths) for paths in files.values()} == {1000}
    with Image.open(files["zebra"][0]) as image:
        assert (image.size, image.mode) == ((28, 28), "L")
    stamp = (source.root / ".complete").stat().st_mtime_ns
    assert resolve_source("demo:animals").root == source.root
    assert (source.root / ".complete").stat().st_mtime_ns == stamp


def test_interrupted_demo_write_leaves_nothing_half_made(state_home):
    def write_then_fail(folder):
        (folder / "a").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a" / "0.png")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        materialize_demo("broken", write_then_fail)
    assert not (state_home / "data" / "demo-broken").exists()
    assert [p.name for p in (state_home / "data").iterdir()] == []


def test_a_written_out_demo_is_readable_by_other_users(state_home):
    """Pipeline tasks in containers read the cache as the image's own user."""

    def write(folder):
        (folder / "a").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a" / "0.png")

    folder = materialize_demo("shared", write)
    assert folder.stat().st_mode & 0o005 == 0o005


def test_demo_digits_and_faces_come_from_installed_packages(state_home):
    digits = list_class_files(resolve_source("demo:digits").root)
    assert sorted(digits) == [f"digit-{i}" for i in range(10)]
    assert sum(len(paths) for paths in digits.values()) == 1797
    with Image.open(digits["digit-3"][0]) as image:
        assert (image.size, image.mode) == ((8, 8), "L")
    levels = {int(v) for path in digits["digit-0"][:20] for v in np.asarray(Image.open(path)).ravel()}
    assert max(levels) == 255 and len(levels) <= 17  # 17 grey levels stretched to the full byte range
    faces = list_class_files(resolve_source("demo:faces").root)
    assert {label: len(paths) for label, paths in faces.items()} == {"face": 100, "non-face": 100}
    with Image.open(faces["face"][0]) as image:
        assert image.size == (25, 25)


def write_idx(path, array: np.ndarray) -> None:
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_demo_fashion_reads_the_debian_idx_files(state_home, tmp_path, monkeypatch):
    import cnnops.data.sources as sources

    debian = tmp_path / "fashion-mnist"
    debian.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("t10k", 8)):
        write_idx(debian / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(debian / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    monkeypatch.setattr(sources, "FASHION_DIR", debian)
    files = list_class_files(resolve_source("demo:fashion").root)
    assert sorted(files) == sorted(sources.FASHION_CLASSES)
    assert sum(len(paths) for paths in files.values()) == 20
    assert len(files["t-shirt"]) == 2 + 1  # labels 0 at rows 0, 10 of train and row 0 of t10k


def test_demo_fashion_without_the_debian_package_says_how_to_get_it(state_home, tmp_path, monkeypatch):
    import cnnops.data.sources as sources
    from cnnops.core.errors import CnnopsError

    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path / "absent")
    with pytest.raises(CnnopsError, match="apt-get install dataset-fashion-mnist"):
        resolve_source("demo:fashion")
    assert not (state_home / "data" / "demo-fashion").exists()


def test_truncated_idx_file_is_refused(tmp_path):
    import gzip

    from cnnops.core.errors import CnnopsError
    from cnnops.data.sources import read_idx

    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\x01" * 10)
    with pytest.raises(CnnopsError, match="truncated"):
        read_idx(path)
