import numpy as np
import pytest
from PIL import Image

from cnnops.sources import ANIMAL_CLASSES, list_class_files, materialize_demo, resolve_source


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
