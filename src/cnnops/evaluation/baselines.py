"""Baselines: a logistic regression and a random forest on downscaled pixels, trained on the same
train split and scored on the same test split as the CNN, each in its own MLflow run of the same
experiment, so every CNN is read next to a floor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cnnops.contracts.dataset import manifest_fingerprint, read_dataset_info, read_manifest
from cnnops.contracts.evaluation import BaselineScores, write_baseline_scores
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError, ImageDecodeError
from cnnops.data.images import decode_image
from cnnops.settings.config import Config
from cnnops.tracking.provenance import provenance_tags
from cnnops.tracking.stores import log_dataset, open_model_experiment

# Images are shrunk to this side (or their own, if smaller) and flattened into features.
BASELINE_SIDE = 16


def make_baselines(seed: int) -> dict[str, Any]:
    return {
        "logistic-regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "random-forest": RandomForestClassifier(n_estimators=200, n_jobs=-1, random_state=seed),
    }


def train_baselines(train_dir: Path, test_dir: Path, config: Config, out_dir: Path | None = None) -> BaselineScores:
    """Fit each baseline on the train split, score it on the test split, log both; returns the
    scores, also written to `out_dir` when given (the gate reads them there)."""
    info = read_dataset_info(train_dir)
    side = min(BASELINE_SIDE, info.height, info.width)
    train, test = read_manifest(train_dir), read_manifest(test_dir)
    x_train, y_train = features(train, info.mode, side), train["label"].to_numpy()
    x_test, y_test = features(test, info.mode, side), test["label"].to_numpy()
    registered_model, experiment_id = open_model_experiment(config, info.source)
    scores: dict[str, dict[str, float]] = {}
    for name, estimator in make_baselines(config.seed).items():
        estimator.fit(x_train, y_train)
        predicted = estimator.predict(x_test)
        scores[name] = {
            "accuracy": float(accuracy_score(y_test, predicted)),
            "macro_f1": float(f1_score(y_test, predicted, labels=info.classes, average="macro", zero_division=0)),
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"baseline-{name}"):
            mlflow.set_tags(
                {"cnnops.step": "baseline", "cnnops.baseline": name, **provenance_tags(info, config, registered_model)}
            )
            mlflow.log_params(
                {
                    "baseline": name,
                    "pixels": f"{side}x{side} {info.mode}",
                    "n_train": len(train),
                    "seed": config.seed,
                }
            )
            mlflow.log_metrics({f"test_{key}": value for key, value in scores[name].items()})
            log_dataset(train, info, train_dir, context="training")
        say(f"baselines: {name}: test accuracy {scores[name]['accuracy']:.4f}, macro F1 {scores[name]['macro_f1']:.4f}")
    result = BaselineScores(test_fingerprint=manifest_fingerprint(test), n_test=len(test), scores=scores)
    if out_dir is not None:
        write_baseline_scores(out_dir, result)
    return result


def features(manifest: pd.DataFrame, mode: str, side: int) -> np.ndarray:
    """Each image decoded by the one decode function at side x side, as a row of floats in [0, 1]."""
    rows = []
    for path in manifest["path"]:
        try:
            pixels = decode_image(Path(path).read_bytes(), mode, (side, side)).pixels
        except (OSError, ImageDecodeError) as err:
            raise CnnopsError(f"{path} can no longer be read as an image ({err}); re-run ingest.") from None
        rows.append(pixels.reshape(-1).astype(np.float32) / 255.0)
    return np.stack(rows)
