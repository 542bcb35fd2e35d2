"""How often a gate promotes a candidate that is really no better: the same config trained with
different seeds, every ordered pair of them gated as (champion, candidate), under the old rule
(a higher score by the margin) and the paired rule (exact McNemar and a bootstrap interval).

    .venv/bin/python bench/gate.py [--seeds 6] [--per-class 100] [--sizes 30 300 3000] [--draws 200]
        [--out bench/results/gate.json]

The models are `simple-cnn` with the default recipe on 3 look-alike Fashion-MNIST classes
(bench/subsets.py), `--per-class` training images a class, each scored once on 3,000 held-out test
images. A test split of each size is `--draws` random subsets of those (the whole 3,000 once),
each gated for every pair. Same config, same data: no seed is better by design, but single
models do differ, so a promotion counts as false when the candidate does not beat the champion
by the margin on all 3,000 images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subsets import fresh_state  # noqa: E402 - bench/ is not a package

MARGIN, CONFIDENCE = 0.005, 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 300, 3000], help="test split sizes")
    parser.add_argument("--draws", type=int, default=200, help="test splits drawn of each size below 3,000")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gate.json"))
    args = parser.parse_args()
    work = fresh_state("cnnops-gate-")
    labels, predictions, accuracies = train_seeds(work, args.seeds, args.per_class)
    rng = np.random.default_rng(0)
    splits = {
        size: [np.arange(len(labels))]
        if size >= len(labels)
        else [rng.choice(len(labels), size=size, replace=False) for _ in range(args.draws)]
        for size in args.sizes
    }
    results = {size: promotion_rates(labels, predictions, accuracies, subsets) for size, subsets in splits.items()}
    report = {
        "seeds": args.seeds,
        "per_class": args.per_class,
        "test_images": len(labels),
        "draws": args.draws,
        "margin": MARGIN,
        "confidence": CONFIDENCE,
        "seed_accuracies": accuracies,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"seed test accuracies: {', '.join(f'{a:.4f}' for a in accuracies)}")
    print(
        "\n| test images | decisions | of them not really better | old rule: promotes, false | "
        "paired rule: promotes, false |\n|---:|---:|---:|---:|---:|"
    )
    for size, r in results.items():
        print(
            f"| {size} | {r['decisions']} | {r['not_better']} | {r['old_rate']:.1%}, {r['old_false_rate']:.1%} | "
            f"{r['paired_rate']:.1%}, {r['paired_false_rate']:.1%} |"
        )
    print(f"\nwrote {args.out}")


def train_seeds(work: Path, seeds: int, per_class: int) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Train the same config once per seed; every model's predictions on the same test images."""
    import keras
    from subsets import write_fashion_subset

    from cnnops.contracts.dataset import read_manifest
    from cnnops.contracts.model import read_model_spec
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.modeling.inputs import predict_manifest
    from cnnops.settings.config import build_config
    from cnnops.training.train import train_model

    source = write_fashion_subset(work / "data", per_class=per_class, test_per_class=1000)
    splits = work / "splits"
    predictions, accuracies = [], []
    for seed in range(seeds):
        config = build_config(overrides={"data.source": str(source), "seed": seed, "registry.model_name": "gate"})
        if seed == 0:  # a pre-split source: the split is the tree's, whatever the seed
            ingest_source(config, work / "dataset")
            split_dataset(work / "dataset", {name: splits / name for name in SPLITS}, config)
        train_model(splits / "train", splits / "val", work / f"model-{seed}", config)
        spec = read_model_spec(work / f"model-{seed}")
        test = read_manifest(splits / "test")
        model = keras.saving.load_model(work / f"model-{seed}" / "model.keras", compile=False)
        predicted = np.array(spec.class_names)[predict_manifest(model, spec, test).argmax(axis=1)]
        labels = test["label"].to_numpy()
        predictions.append(predicted)
        accuracies.append(float(np.mean(predicted == labels)))
    return labels, predictions, accuracies


def promotion_rates(
    labels: np.ndarray, predictions: list[np.ndarray], accuracies: list[float], subsets: list[np.ndarray]
) -> dict[str, Any]:
    """Share of (champion, candidate, test split) decisions each rule promotes, and of those where
    the candidate is not better by the margin on all test images, the share each rule promotes."""
    from cnnops.evaluation.evidence import compare_paired

    counts = dict.fromkeys(("decisions", "not_better", "old", "paired", "old_false", "paired_false"), 0)
    for champion, candidate in itertools.permutations(range(len(predictions)), 2):
        not_better = accuracies[candidate] < accuracies[champion] + MARGIN
        for index, subset in enumerate(subsets):
            y, a, b = labels[subset], predictions[candidate][subset], predictions[champion][subset]
            evidence = compare_paired("accuracy", y, a, b, CONFIDENCE, seed=index)
            old = evidence.candidate_score >= evidence.champion_score + MARGIN
            paired = evidence.shows_better(MARGIN)
            counts["decisions"] += 1
            counts["not_better"] += not_better
            counts["old"] += old
            counts["paired"] += paired
            counts["old_false"] += old and not_better
            counts["paired_false"] += paired and not_better
    counts = {key: int(value) for key, value in counts.items()}
    return {
        **counts,
        "old_rate": counts["old"] / counts["decisions"],
        "paired_rate": counts["paired"] / counts["decisions"],
        "old_false_rate": counts["old_false"] / max(1, counts["not_better"]),
        "paired_false_rate": counts["paired_false"] / max(1, counts["not_better"]),
    }


if __name__ == "__main__":
    main()
