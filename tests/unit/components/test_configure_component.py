"""components.configure through `.python_func`: the typed parameters over the config overlay, an
unset one keeping the overlay's value, else the default; a bad value is one line and exit 2."""

import pytest

from cnnops.components.configure import configure
from cnnops.settings.config import build_config, validate_config


def test_set_parameters_win_unset_ones_keep_the_overlay_then_the_default():
    overlay = {"train": {"epochs": 7, "learning_rate": 0.01}, "gate": {"metric": "macro_f1"}}
    resolved = validate_config(configure.python_func(config=overlay, epochs=3, seed=0, model_name="flowers"))
    assert (resolved.train.epochs, resolved.seed, resolved.registry.model_name) == (3, 0, "flowers")
    assert (resolved.train.learning_rate, resolved.gate.metric) == (0.01, "macro_f1")  # the overlay's
    assert resolved.train.architecture == "simple-cnn" and resolved.train.batch_size is None  # the defaults
    assert overlay == {"train": {"epochs": 7, "learning_rate": 0.01}, "gate": {"metric": "macro_f1"}}
    nothing_set = validate_config(configure.python_func(config={}))
    # The defaults, with the registered-model name filled in from the data source for every task.
    assert nothing_set.registry.model_name == "cnnops-animals"
    assert nothing_set.model_copy(update={"registry": build_config().registry}) == build_config()


def test_a_bad_parameter_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        configure.python_func(config={}, architecture="alexnet")
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cnnops: error: invalid config: train.architecture: Input should be")
