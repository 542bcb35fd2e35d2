"""Export a registered version for serving: pin it into a *served-model folder*.

The folder's layout and its reader are a contract (`cnnops.contracts.served`): reading one needs
neither TensorFlow nor MLflow, so the service that only reads it stays light. MLflow is imported
here, where a version is exported.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cnnops.contracts.evaluation import read_evaluation
from cnnops.contracts.model import read_model_spec, read_run_record, write_model_spec
from cnnops.contracts.records import write_record
from cnnops.contracts.served import MODEL_FILE, SERVED_FILE, ServedInfo, ServedModel
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import state_home
from cnnops.monitoring.reference import REFERENCE_FILE

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


def served_models_home() -> Path:
    """Where exported versions are kept, one folder per registered version."""
    return state_home() / "serving"


def export_registered(
    name: str, reference: str = "champion", out_root: Path | None = None, model_file: Path | None = None
) -> ServedModel:
    """Pin one registered version (an alias or a version number) into a served-model folder.

    The folder is named by version, so re-exporting the same version reuses it, and a new
    champion never changes what an already exported folder serves. `model_file`, when given, is
    the version's model as infra-validation served it: it is copied in, byte for byte, instead of
    the registry's copy being loaded and saved again.
    """
    from cnnops.tracking.server import proxied_artifacts_reachable
    from cnnops.tracking.stores import store_faults

    with store_faults(), proxied_artifacts_reachable(name):
        return export_version(name, reference, out_root or served_models_home(), model_file)


def export_candidate(model_dir: Path, evaluation_dir: Path, out_root: Path | None = None) -> ServedModel:
    """A served-model folder for a candidate that is not registered yet: its model file as
    trained, its spec, and its run and test scores; version None, requested "candidate"."""
    run = read_run_record(model_dir)
    scores = read_evaluation(evaluation_dir)
    spec = read_model_spec(model_dir)
    folder = (out_root or served_models_home()) / f"{run.registered_model}-run-{run.run_id}"
    replace_atomically(folder / MODEL_FILE, lambda path: shutil.copyfile(model_dir / MODEL_FILE, path))
    info = ServedInfo(
        version=None,
        registered_model=run.registered_model,
        requested="candidate",
        aliases=[],
        run_id=run.run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        test_accuracy=scores.accuracy,
        test_macro_f1=scores.macro_f1,
        decision=None,
        reason="a candidate, served to be infra-validated before it is registered",
        registration=None,
        champion_score=None,
        candidate_score_compared=None,
        compared_on=None,
        compared_with_version=None,
        chance_score=None,
        best_baseline=None,
        best_baseline_score=None,
        evidence=None,
    )
    copy_reference(evaluation_dir / REFERENCE_FILE, folder)
    write_model_spec(folder, spec)
    write_record(folder / SERVED_FILE, info)
    return ServedModel(folder, spec, info)


def export_version(name: str, reference: str, out_root: Path, model_file: Path | None = None) -> ServedModel:
    """`export_registered` once the store's artifacts are reachable; store faults are its to name."""
    from mlflow.tracking import MlflowClient

    from cnnops.tracking.registry import describe_version, version_spec
    from cnnops.tracking.stores import use_tracking_store

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
    if model_file is not None:
        replace_atomically(folder / MODEL_FILE, lambda path: shutil.copyfile(model_file, path))
    elif not (folder / MODEL_FILE).is_file():
        write_model_file(f"models:/{name}/{number}", folder)
    if version.run_id and not (folder / REFERENCE_FILE).is_file():
        download_reference(version.run_id, folder)
    write_model_spec(folder, spec)
    write_record(folder / SERVED_FILE, info)
    return ServedModel(folder, spec, info)


def resolve_version(client: MlflowClient, name: str, reference: str, uri: str) -> ModelVersion:
    """The model version an alias or a version number names, or one line saying why there is none."""
    from cnnops.tracking.registry import find_alias
    from cnnops.tracking.stores import lookup

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

    model = mlflow.keras.load_model(model_uri)
    replace_atomically(folder / MODEL_FILE, lambda path: model.save(path))


def copy_reference(source: Path, folder: Path) -> None:
    """The evaluation's drift reference into the served folder, when the evaluation kept one."""
    if source.is_file():
        replace_atomically(folder / REFERENCE_FILE, lambda path: shutil.copyfile(source, path))


def download_reference(run_id: str, folder: Path) -> None:
    """The version's drift reference from its run's evaluation artifacts. A run evaluated without
    one leaves the folder without one (the service then says no reference is available); a store
    that fails while listing them is a fault, raised as one by the caller's `store_faults`."""
    import tempfile

    from mlflow.tracking import MlflowClient

    artifact = f"evaluation/{REFERENCE_FILE}"
    client = MlflowClient()
    if artifact not in {f.path for f in client.list_artifacts(run_id, "evaluation")}:
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, artifact, tmp))
        copy_reference(local, folder)
