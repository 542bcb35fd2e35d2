"""Canary images: a few test images and the class probabilities the offline evaluation gave each,
kept in the evaluation folder (`cnnops.contracts.infra.CanarySet`) so that infra-validation can
ask a real server the same question and require the same answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnnops.contracts.infra import Canary, CanarySet
from cnnops.contracts.model import ModelSpec


def pick_canaries(
    manifest: pd.DataFrame, probabilities: np.ndarray, spec: ModelSpec, run_id: str, count: int
) -> CanarySet:
    """At most `count` test images, taken in turn from each class (in manifest order), so every
    class the test split holds is served before any class is served twice."""
    by_class = [list(rows) for _, rows in manifest.reset_index(drop=True).groupby("label", sort=True).groups.items()]
    chosen: list[int] = []
    for turn in range(max((len(rows) for rows in by_class), default=0)):
        chosen.extend(rows[turn] for rows in by_class if turn < len(rows))
        if len(chosen) >= count:
            break
    rows = manifest.reset_index(drop=True)
    return CanarySet(
        run_id=run_id,
        class_names=spec.class_names,
        images=[
            Canary(
                path=str(rows.at[i, "path"]),
                sha256=str(rows.at[i, "sha256"]),
                label=str(rows.at[i, "label"]),
                probabilities=[float(p) for p in probabilities[i]],
            )
            for i in sorted(chosen[:count])
        ],
    )
