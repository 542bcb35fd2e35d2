"""The training recipe: batch size, patience, a warm-up before early stopping may fire, and whether
batchnorm statistics are recalibrated, all sized to the train split.

Fixed defaults fail small data: 160 images in batches of 64 are 3 optimizer steps an epoch, so
batchnorm's moving statistics (momentum 0.9) still sit near their initial values when validation
reads them, val accuracy stays at chance, and early stopping counted in such epochs fires before
the net has learned. The recipe counts in optimizer steps instead, and recomputes the statistics
from the training images before each validation when an epoch is too short for them to settle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from cnnops.core.errors import CnnopsError
from cnnops.settings.config import TrainConfig

# An automatic batch size aims at this many optimizer steps an epoch, within these bounds.
MIN_STEPS_PER_EPOCH = 10
MIN_AUTO_BATCH, MAX_AUTO_BATCH = 8, 64
# Automatic patience waits at least this many optimizer steps, and at least this many epochs.
PATIENCE_STEPS, MIN_PATIENCE_EPOCHS = 50, 4
# Below this many steps an epoch, moving statistics at momentum 0.9 (0.9^100 < 1e-4 of the start
# left) are not yet the statistics of the current weights, so `auto` recalibrates them.
BATCHNORM_SETTLE_STEPS = 100


@dataclass(frozen=True)
class Recipe:
    """What training actually uses for one run; logged as the run's `recipe.*` params."""

    batch_size: int
    steps_per_epoch: int
    patience: int  # epochs without a val-loss gain before early stopping
    plateau_patience: int  # epochs without a gain before the learning rate is halved
    min_epochs: int  # early stopping may not end training before this many epochs
    recalibrate_batchnorm: bool

    def as_params(self) -> dict[str, Any]:
        return {f"recipe.{key}": value for key, value in asdict(self).items()}


def plan_recipe(n_train: int, train: TrainConfig, own_batchnorm: bool = True) -> Recipe:
    """Size the recipe to `n_train` images; a value set in the config is taken as it is.
    `own_batchnorm` is false for a backbone architecture: its batchnorm layers sit inside the
    pretrained network, which keeps its statistics, so there is nothing to recalibrate."""
    batch_size = train.batch_size if train.batch_size is not None else auto_batch_size(n_train)
    check_batch_size(n_train, batch_size)
    steps = math.ceil(n_train / batch_size)
    patience = (
        train.patience if train.patience is not None else max(MIN_PATIENCE_EPOCHS, math.ceil(PATIENCE_STEPS / steps))
    )
    recalibrate = (
        own_batchnorm
        and {"auto": steps < BATCHNORM_SETTLE_STEPS, "always": True, "never": False}[train.recalibrate_batchnorm]
    )
    return Recipe(
        batch_size=batch_size,
        steps_per_epoch=steps,
        patience=patience,
        plateau_patience=max(1, patience // 2),
        min_epochs=math.ceil(train.min_steps / steps),
        recalibrate_batchnorm=recalibrate,
    )


def describe_recipe(recipe: Recipe) -> str:
    """One line a person reads in a task log."""
    return (
        f"batch {recipe.batch_size} ({recipe.steps_per_epoch} steps an epoch), patience {recipe.patience} "
        f"epochs, no early stop before epoch {recipe.min_epochs}, batchnorm statistics "
        + ("recalibrated before each validation" if recipe.recalibrate_batchnorm else "from moving averages")
    )


def auto_batch_size(n_train: int) -> int:
    """The largest power of two up to 64 that still gives MIN_STEPS_PER_EPOCH full batches (at
    least 8, and never more than the split holds)."""
    target = max(1, n_train // MIN_STEPS_PER_EPOCH)
    batch = min(MAX_AUTO_BATCH, max(MIN_AUTO_BATCH, 2 ** int(math.log2(target))))
    return max(1, min(batch, n_train))


def check_batch_size(n_train: int, batch_size: int) -> None:
    """A train split smaller than one batch would train on a single ragged step per epoch."""
    if n_train < batch_size:
        raise CnnopsError(
            f"the train split has {n_train} images, fewer than one batch of train.batch_size "
            f"{batch_size}; lower it (--set train.batch_size={max(1, n_train // 2)}), leave it "
            "unset to size it automatically, or add images."
        )
