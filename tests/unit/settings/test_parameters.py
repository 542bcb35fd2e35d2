"""The pipeline's typed parameters are declared once (`PipelineParameters`): the configure
component, the pipeline and `cnnops run` take exactly those, with the same types and unset
defaults; a run's settings are resolved once, with the registered-model name filled in."""

import inspect

from cnnops import cli
from cnnops.components.configure import configure
from cnnops.pipelines.pipeline import build_pipeline
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.naming import default_model_name
from cnnops.settings.parameters import PipelineParameters, plan_run

DECLARED = {name: field.default for name, field in PipelineParameters.model_fields.items()}
# `cnnops run` names the data flag after what the user passes; every other flag is the parameter.
CLI_NAMES = {"data_source": "data"}


def component_inputs(component) -> dict:
    return {name: spec.default for name, spec in component.component_spec.inputs.items()}


def test_the_configure_component_takes_the_declared_parameters_and_the_overlay():
    inputs = component_inputs(configure)
    assert inputs.pop("config") is None
    assert inputs == DECLARED
    types = {name: p.annotation for name, p in inspect.signature(configure.python_func).parameters.items()}
    for name, field in PipelineParameters.model_fields.items():
        assert types[name] in (field.annotation, field.annotation.__name__), name


def test_the_pipeline_takes_the_declared_parameters_the_overlay_and_fresh():
    inputs = component_inputs(build_pipeline())
    assert inputs.pop("config") == {} and inputs.pop("fresh") is False
    assert inputs == DECLARED


def test_cnnops_run_has_a_flag_for_each_declared_parameter():
    flags = set(inspect.signature(cli.run).parameters)
    assert {CLI_NAMES.get(name, name) for name in DECLARED} <= flags


def test_a_run_is_resolved_once_with_its_model_name():
    overlay = to_pipeline_parameter(build_config(overrides={"train.epochs": 3}))
    plan = plan_run(overlay, PipelineParameters(data_source="demo:digits", epochs=5))
    assert plan.config.train.epochs == 5 and plan.config.data.source == "demo:digits"
    assert plan.config.registry.model_name == default_model_name("demo:digits") == "cnnops-digits"
    assert "model_name" not in overlay.get("registry", {})  # the overlay is what the user set
    named = plan_run(overlay, PipelineParameters(model_name="flowers"))
    assert named.config.registry.model_name == "flowers"
