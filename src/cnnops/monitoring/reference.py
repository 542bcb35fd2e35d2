"""The drift reference: what a model saw and said on its own evaluation images, kept beside it so
that the service can judge its traffic against that model's data and not some other model's.

Written by evaluation from the same forward pass that scores the test images
(`evaluate.embed_manifest`). Reading one needs no TensorFlow, so the service's import stays light.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cnnops.contracts.model import ModelSpec
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.monitoring.drift import Observations

if TYPE_CHECKING:  # a manifest is built by evaluation; the service only reads a reference
    import pandas as pd

REFERENCE_FILE = "drift_reference.npz"
REFERENCE_FORMAT = 1


@dataclass(frozen=True)
class DriftReference:
    """A model's evaluation images, as the drift test and its report compare them."""

    run_id: str
    class_names: list[str]
    observations: Observations
    width: np.ndarray
    height: np.ndarray
    mode: np.ndarray
    brightness: np.ndarray


def build_reference(
    run_id: str,
    spec: ModelSpec,
    manifest: pd.DataFrame,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    brightness: np.ndarray,
) -> DriftReference:
    sizes = [image_header(Path(p)) for p in manifest["path"]]
    return DriftReference(
        run_id=run_id,
        class_names=list(spec.class_names),
        observations=Observations(
            embeddings=embeddings,
            predicted=probabilities.argmax(axis=1).astype(np.int64),
            confidence=probabilities.max(axis=1).astype(np.float64),
            classes=len(spec.class_names),
        ),
        width=np.array([s[0] for s in sizes], dtype=np.int64),
        height=np.array([s[1] for s in sizes], dtype=np.int64),
        mode=np.array([s[2] for s in sizes], dtype="U8"),
        brightness=brightness,
    )


def image_header(path: Path) -> tuple[int, int, str]:
    """Width, height and mode from the file's header; the pixels are not decoded again."""
    with Image.open(path) as img:
        return img.width, img.height, img.mode


def write_reference(folder: Path, reference: DriftReference) -> Path:
    path = folder / REFERENCE_FILE
    obs = reference.observations

    def write(tmp: Path) -> None:
        with tmp.open("wb") as out:
            np.savez(
                out,
                format=np.array(REFERENCE_FORMAT),
                run_id=np.array(reference.run_id),
                class_names=np.array(reference.class_names),
                embeddings=obs.embeddings,
                predicted=obs.predicted,
                confidence=obs.confidence,
                width=reference.width,
                height=reference.height,
                mode=reference.mode,
                brightness=reference.brightness,
            )

    replace_atomically(path, write)
    return path


def read_reference(folder: Path) -> DriftReference | None:
    """The folder's reference; None when it has none (a model evaluated before references were
    kept still serves). A reference that cannot be read is an error, not an absence."""
    path = folder / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if int(saved["format"]) != REFERENCE_FORMAT:
                raise ValueError(f"format {int(saved['format'])}, this cnnops reads {REFERENCE_FORMAT}")
            names = [str(n) for n in saved["class_names"]]
            return DriftReference(
                run_id=str(saved["run_id"]),
                class_names=names,
                observations=Observations(
                    embeddings=saved["embeddings"],
                    predicted=saved["predicted"],
                    confidence=saved["confidence"],
                    classes=len(names),
                ),
                width=saved["width"],
                height=saved["height"],
                mode=saved["mode"],
                brightness=saved["brightness"],
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CnnopsError(f"{path} is not a readable drift reference ({err}); evaluate the model again.") from None
