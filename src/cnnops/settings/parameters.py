"""The pipeline's typed parameters: what people change from run to run, each shown on its own in the
KFP UI, on top of the full config as an optional overlay.

kfp.local cannot run a pipeline whose parameter defaults to None (an unset optional parameter has
no value it can read, and None cannot be passed), so an unset parameter is a sentinel the config
itself refuses: "" for a string, 0 for epochs, batch size and learning rate, -1 for the seed, false
for force-promote. Unset means the overlay's value, else the config's default. Only cnnops.settings.config is
imported here, so the configure task that resolves them starts without TensorFlow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cnnops.settings.config import Config, set_dotted, to_pipeline_parameter, validate_config
from cnnops.settings.naming import model_name_for

UNSET_SEED = -1


class PipelineParameters(BaseModel):
    """The typed pipeline parameters; each field's default is its "unset" sentinel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_source: str = Field(default="", description="data.source; empty: the overlay's, else demo:animals.")
    model_name: str = Field(default="", description="registry.model_name; empty: derived from the data source.")
    architecture: str = Field(default="", description="train.architecture; empty: the overlay's, else simple-cnn.")
    epochs: int = Field(default=0, description="train.epochs; 0: the overlay's, else 20.")
    learning_rate: float = Field(default=0.0, description="train.learning_rate; 0: the overlay's, else 2e-3.")
    batch_size: int = Field(default=0, description="train.batch_size; 0: the overlay's, else sized to the data.")
    seed: int = Field(default=UNSET_SEED, description="seed; -1: the overlay's, else 42.")
    gate_metric: str = Field(default="", description="gate.metric; empty: the overlay's, else accuracy.")
    force_promote: bool = Field(default=False, description="gate.force_promote; false: the overlay's, else false.")

    def overrides(self) -> dict[str, Any]:
        """The dotted config keys of the parameters that are set."""
        unset = PipelineParameters()
        return {CONFIG_KEYS[name]: value for name, value in self.model_dump().items() if value != getattr(unset, name)}


# Each typed parameter and the config key it sets.
CONFIG_KEYS = {
    "data_source": "data.source",
    "model_name": "registry.model_name",
    "architecture": "train.architecture",
    "epochs": "train.epochs",
    "learning_rate": "train.learning_rate",
    "batch_size": "train.batch_size",
    "seed": "seed",
    "gate_metric": "gate.metric",
    "force_promote": "gate.force_promote",
}


def resolve_parameters(overlay: dict[str, Any], parameters: PipelineParameters) -> Config:
    """The validated config of one pipeline run: defaults, then the overlay, then the typed
    parameters that are set, with the registered-model name filled in (the configured one, else
    the one derived from the data source), so that every task of the run names the same model
    whatever path it sees the data at."""
    raw = copy.deepcopy(overlay)
    for dotted, value in parameters.overrides().items():
        set_dotted(raw, dotted, value)
    config = validate_config(raw)
    registry = config.registry.model_copy(update={"model_name": model_name_for(config)})
    return config.model_copy(update={"registry": registry})


@dataclass(frozen=True)
class RunPlan:
    """A pipeline run's settings, resolved once: the config overlay and the typed parameters the
    pipeline is given (the KFP UI shows them apart), and the config they resolve to, which every
    check before the run and the runner itself read."""

    overlay: dict[str, Any]
    parameters: PipelineParameters
    config: Config


def plan_run(overlay: dict[str, Any], parameters: PipelineParameters | None = None) -> RunPlan:
    """Resolve a run's settings once; an invalid setting is one line, before anything starts."""
    typed = parameters or PipelineParameters()
    return RunPlan(overlay, typed, resolve_parameters(overlay, typed))


def configure_pipeline(overlay: dict[str, Any], parameters: PipelineParameters) -> dict[str, Any]:
    """The resolved config as the one `dict` parameter every later task takes."""
    return to_pipeline_parameter(resolve_parameters(overlay, parameters))
