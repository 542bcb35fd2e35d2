"""Export a registered version for serving: pin it into a *served-model folder*.

A served-model folder holds one registered version: `model.keras`, `model_spec.json` (the input
spec, the same file a model folder holds) and `served.json` (`ServedInfo`: the version's name,
number, aliases and test scores, as `cnnops status` describes it). Reading one needs neither
TensorFlow nor MLflow, so the service that only reads it stays light; MLflow is imported where a
version is exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnops.artifacts import ModelSpec, Record, read_model_spec, read_record, write_model_spec, write_record
from cnnops.errors import CnnopsError
from cnnops.paths import state_home
from cnnops.status import VersionStatus

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

SERVED_FILE = "served.json"
MODEL_FILE = "model.keras"
EXPORT_STEP = "`cnnops serve` (or `make bento`) to export it again"


class ServedInfo(VersionStatus, Record):
    """What the service says about its model (`/info`): the version as `cnnops status` shows it,
    the registered model, and the alias or number it was asked for. No tracking URI: /info is
    public, and a store URI can carry credentials."""

    registered_model: str
    requested: str


@dataclass(frozen=True)
class ServedModel:
    """An exported folder: where it is, the spec to feed its model, and the registry facts."""

    folder: Path
    spec: ModelSpec
    info: ServedInfo


def served_models_home() -> Path:
    """Where exported versions are kept, one folder per registered version."""
    return state_home() / "serving"


def export_registered(name: str, reference: str = "champion", out_root: Path | None = None) -> ServedModel:
    """Pin one registered version (an alias or a version number) into a served-model folder.

    The folder is named by version, so re-exporting the same version reuses it, and a new
    champion never changes what an already exported folder serves.
    """
    from cnnops.tracking import store_faults
    from cnnops.tracking_server import proxied_artifacts_reachable

    with store_faults(), proxied_artifacts_reachable(name):
        return export_version(name, reference, out_root or served_models_home())


def export_version(name: str, reference: str, out_root: Path) -> ServedModel:
    """`export_registered` once the store's artifacts are reachable; store faults are its to name."""
    from mlflow.tracking import MlflowClient

    from cnnops.registration import version_spec
    from cnnops.status import describe_version
    from cnnops.tracking import use_tracking_store

    uri = use_tracking_store()
    client = MlflowClient()
    version = resolve_version(client, name, reference, uri)
    spec = version_spec(version)
    if spec is None:
        raise CnnopsError(
            f"{name} v{version.version} carries no cnnops input spec in its registry tags (it was not "
            "registered by cnnops), so its classes and input size are unknown; it cannot be served."
        )
    number = int(version.version)
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if int(v) == number)
    described = describe_version(version, aliases)
    info = ServedInfo(**dict(described), registered_model=name, requested=reference)
    folder = out_root / f"{name}-v{number}"
    if not (folder / MODEL_FILE).is_file():
        write_model_file(f"models:/{name}/{number}", folder)
    write_model_spec(folder, spec)
    write_record(folder / SERVED_FILE, info)
    return ServedModel(folder, spec, info)


def resolve_version(client: MlflowClient, name: str, reference: str, uri: str) -> ModelVersion:
    """The model version an alias or a version number names, or one line saying why there is none."""
    from cnnops.registration import find_alias
    from cnnops.tracking import lookup

    if reference.isdigit():
        numbered = lookup(lambda: client.get_model_version(name, reference))
        if numbered is None:
            raise CnnopsError(f"{name} has no version {reference} in {uri}; see `cnnops status`.")
        return numbered
    version = find_alias(client, name, reference)
    if version is None:
        raise CnnopsError(
            f"no {reference} registered for model '{name}' in {uri}; run `make run` (or "
            "`cnnops run`) to train and register one, or name another model with --model-name."
        )
    return version


def write_model_file(model_uri: str, folder: Path) -> None:
    """Save a registered model as one `.keras` file, written aside and moved in whole."""
    import mlflow

    from cnnops.atomic import replace_atomically

    model = mlflow.keras.load_model(model_uri)
    replace_atomically(folder / MODEL_FILE, lambda path: model.save(path))


def read_served_model(folder: Path) -> ServedModel:
    """The spec and registry facts of an exported folder; no TensorFlow needed."""
    if not (folder / MODEL_FILE).is_file():
        raise CnnopsError(
            f"{folder} holds no {MODEL_FILE}; export a registered version first (`cnnops serve` and `make bento` do)."
        )
    return ServedModel(folder, read_model_spec(folder), read_record(folder / SERVED_FILE, ServedInfo, EXPORT_STEP))
