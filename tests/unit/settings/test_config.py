import pytest

from cnnops.core.errors import CnnopsError
from cnnops.settings.config import build_config, flatten_config, parse_overrides, to_pipeline_parameter, validate_config


def test_defaults_then_file_then_overrides(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  epochs: 7\n  batch_size: 16\n")
    config = build_config(file, parse_overrides(["train.epochs=3", "gate.margin=0.1"]))
    assert (config.train.epochs, config.train.batch_size, config.gate.margin) == (3, 16, 0.1)
    assert config.data.source == "demo:animals"


def test_unknown_key_is_one_line_error(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  epoch: 7\n")
    with pytest.raises(CnnopsError, match=r"unknown key 'train.epoch'") as err:
        build_config(file)
    assert "\n" not in str(err.value)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(CnnopsError, match="sum to 1"):
        build_config(overrides={"split.train": 0.9})


def test_config_is_frozen():
    config = build_config()
    with pytest.raises(ValueError):
        config.train.epochs = 2


def test_flatten_for_mlflow_params():
    flat = flatten_config(build_config())
    assert flat["train.epochs"] == 20
    assert flat["gate.floor"] == 0.5


def test_set_values_are_typed_by_the_config_not_by_yaml():
    config = build_config(
        overrides=parse_overrides(
            [
                "registry.model_name=2024",
                "data.source=off",
                "train.epochs=3",
                "train.jit_compile=true",
                "data.image_size=null",
            ]
        )
    )
    assert (config.registry.model_name, config.data.source) == ("2024", "off")
    assert (config.train.epochs, config.train.jit_compile, config.data.image_size) == (3, True, None)


def test_set_value_of_the_wrong_type_is_one_line():
    with pytest.raises(CnnopsError, match=r"train.epochs: Input should be a valid integer"):
        build_config(overrides=parse_overrides(["train.epochs=["]))


def test_a_drift_window_too_small_for_a_verdict_is_one_line():
    with pytest.raises(CnnopsError, match="drift.min_window 400 is over drift.window_size 300"):
        build_config(overrides=parse_overrides(["drift.min_window=400"]))


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_malformed_set_is_rejected(bad):
    with pytest.raises(CnnopsError, match="section.key=value"):
        parse_overrides([bad])


def test_missing_config_file(tmp_path):
    with pytest.raises(CnnopsError, match="does not exist"):
        build_config(tmp_path / "nope.yaml")


def test_pipeline_parameter_round_trips():
    config = build_config(overrides={"train.epochs": 3})
    parameter = to_pipeline_parameter(config)
    assert None not in _leaves(parameter)
    assert validate_config(parameter) == config


def _leaves(node):
    return [leaf for value in node.values() for leaf in (_leaves(value) if isinstance(value, dict) else [value])]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gate.confidence", "1.5", "gate.confidence: Input should be less than 1"),
        ("gate.confidence", "0.2", "gate.confidence: Input should be greater than or equal to 0.5"),
        ("gate.min_over_chance", "-0.1", "gate.min_over_chance: Input should be greater than or equal to 0"),
        ("gate.baseline_tolerance", "2", "gate.baseline_tolerance: Input should be less than or equal to 1"),
        ("gate.margin", "1.5", "gate.margin: Input should be less than or equal to 1"),
        ("gate.test", "t-test", "gate.test: Input should be 'paired' or 'none'"),
        ("train.min_steps", "-1", "train.min_steps: Input should be greater than or equal to 0"),
    ],
)
def test_a_gate_or_recipe_setting_out_of_range_is_a_config_error(key, value, message):
    with pytest.raises(CnnopsError, match=r"^invalid config: " + message.replace("(", r"\(")) as err:
        build_config(overrides=parse_overrides([f"{key}={value}"]))
    assert "\n" not in str(err.value)
