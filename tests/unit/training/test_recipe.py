"""The training recipe sized to the train split, in optimizer steps."""

import pytest

from cnnops.core.errors import CnnopsError
from cnnops.settings.config import build_config
from cnnops.training.recipe import plan_recipe


def recipe(n_train: int, **overrides):
    return plan_recipe(n_train, build_config(overrides=overrides).train)


@pytest.mark.parametrize(
    ("n_train", "batch", "steps", "patience", "min_epochs", "recalibrate"),
    [
        (160, 16, 10, 5, 10, True),  # demo:faces: a fixed batch of 64 would give 3 steps an epoch
        (72, 8, 9, 6, 12, True),  # 30 images a class, 3 classes
        (20, 8, 3, 17, 34, True),  # fewer images than 8 batches: at least 8 a batch
        (7594, 64, 119, 4, 1, False),  # demo:animals' train split: batch 64 and 4 epochs' patience
        (56000, 64, 875, 4, 1, False),  # Fashion-MNIST
    ],
)
def test_the_recipe_counts_steps(n_train, batch, steps, patience, min_epochs, recalibrate):
    planned = recipe(n_train)
    assert (
        planned.batch_size,
        planned.steps_per_epoch,
        planned.patience,
        planned.min_epochs,
        planned.recalibrate_batchnorm,
    ) == (batch, steps, patience, min_epochs, recalibrate)
    assert planned.plateau_patience == max(1, patience // 2)


def test_what_the_config_sets_is_taken_as_it_is():
    planned = recipe(
        160,
        **{"train.batch_size": 64, "train.patience": 4, "train.min_steps": 0, "train.recalibrate_batchnorm": "never"},
    )
    assert (planned.batch_size, planned.steps_per_epoch, planned.patience, planned.min_epochs) == (64, 3, 4, 0)
    assert not planned.recalibrate_batchnorm
    assert recipe(56000, **{"train.recalibrate_batchnorm": "always"}).recalibrate_batchnorm
    assert recipe(5).batch_size == 5  # never more than the split holds
    # A backbone's batchnorm layers are the pretrained network's: nothing to recalibrate.
    assert not plan_recipe(160, build_config().train, own_batchnorm=False).recalibrate_batchnorm


def test_the_params_name_every_choice():
    assert recipe(160).as_params() == {
        "recipe.batch_size": 16,
        "recipe.steps_per_epoch": 10,
        "recipe.patience": 5,
        "recipe.plateau_patience": 2,
        "recipe.min_epochs": 10,
        "recipe.recalibrate_batchnorm": True,
    }


def test_a_split_smaller_than_a_set_batch_is_refused_in_one_line():
    with pytest.raises(CnnopsError, match=r"the train split has 10 images, fewer than one batch") as err:
        recipe(10, **{"train.batch_size": 64})
    assert "\n" not in str(err.value)
