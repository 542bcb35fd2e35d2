"""Export a registered version for serving: pin it into a *served-model folder*.

The folder's layout and its reader are a contract (`cnnops.contracts.served`): reading one needs
neither TensorFlow nor MLflow, so the service that only reads it stays light. MLflow is imported
here, where a version is exported.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cnnops.contracts.evaluation import read_evaluation
from cnnops.contracts.export import EXPORT_REPORT_FILE, ONNX_FILE, PARITY_IMAGES_FILE
from cnnops.contracts.model import read_model_spec, read_run_record, write_model_spec
from cnnops.contracts.records import write_record
from cnnops.contracts.served import MODEL_FILE, SERVED_FILE, ServedInfo, ServedModel, read_served_model
from cnnops.core.atomic import replace_atomically
from cnnops.core.errors import CnnopsError
from cnnops.core.paths import state_home
from cnnops.monitoring.reference import REFERENCE_FILE

# What a served folder takes from its version's evaluation: the drift reference, the ONNX export
# the service runs with its parity report, and the images that parity was measured on.
EVALUATION_FILES = (REFERENCE_FILE, ONNX_FILE, EXPORT_REPORT_FILE, PARITY_IMAGES_FILE)
# What infra-validation served, shipped byte for byte when the version is released.
VALIDATED_FILES = (MODEL_FILE, ONNX_FILE, EXPORT_REPORT_FILE)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


def served_models_home() -> Path:
    """Where exported versions are kept, one folder per registered version."""
    return state_home() / "serving"


def export_registered(
    name: str, reference: str = "champion", out_root: Path | None = None, validated: Path | None = None
) -> ServedModel:
    """Pin one registered version (an alias or a version number) into a served-model folder.

    The folder is named by version, so re-exporting the same version reuses it, and a new
    champion never changes what an already exported folder serves. `validated`, when given, is a
    folder holding the version's model files as infra-validation served them (`model.keras`,
    and its ONNX export with the parity report when it had one): they are copied in, byte for
    byte, instead of the registry's copies being loaded and saved again.
    """
    from cnnops.tracking.server import proxied_artifacts_reachable
    from cnnops.tracking.stores import store_faults

    with store_faults(), proxied_artifacts_reachable(name):
        return export_version(name, reference, out_root or served_models_home(), validated)


def export_candidate(model_dir: Path, evaluation_dir: Path, out_root: Path | None = None) -> ServedModel:
    """A served-model folder for a candidate that is not registered yet: its model file as
    trained, its spec, and its run and test scores; version None, requested "candidate"."""
    run = read_run_record(model_dir)
    scores = read_evaluation(evaluation_dir)
    spec = read_model_spec(model_dir)
    folder = (out_root or served_models_home()) / f"{run.registered_model}-run-{run.run_id}"
    copy_files(model_dir, folder, (MODEL_FILE,))
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
    copy_files(evaluation_dir, folder, EVALUATION_FILES)
    write_model_spec(folder, spec)
    write_record(folder / SERVED_FILE, info)
    return read_served_model(folder)


def export_version(name: str, reference: str, out_root: Path, validated: Path | None = None) -> ServedModel:
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
    if validated is not None:
        copy_files(validated, folder, VALIDATED_FILES)
    elif not (folder / MODEL_FILE).is_file():
        write_model_file(f"models:/{name}/{number}", folder)
    if version.run_id:
        skip = VALIDATED_FILES if validated is not None else ()
        download_evaluation_files(version.run_id, folder, tuple(n for n in EVALUATION_FILES if n not in skip))
    write_model_spec(folder, spec)
    write_record(folder / SERVED_FILE, info)
    return read_served_model(folder)


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


def copy_files(source: Path, folder: Path, names: tuple[str, ...]) -> None:
    """Each named file of `source` into `folder`, written aside and moved in; a name `source`
    lacks is removed from `folder`, so no file outlives the model it was made from."""
    for name in names:
        target = folder / name
        if (source / name).is_file():
            replace_atomically(target, partial(shutil.copyfile, source / name))
        else:
            target.unlink(missing_ok=True)


def download_evaluation_files(run_id: str, folder: Path, names: tuple[str, ...] = EVALUATION_FILES) -> None:
    """The version's evaluation files (drift reference, ONNX export and its parity report, parity
    images) from its run's artifacts, those not in the folder yet. A run evaluated without one
    leaves the folder without it (the service then says why); a store that fails while listing
    them is a fault, raised as one by the caller's `store_faults`."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    logged = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    wanted = [n for n in names if not (folder / n).is_file() and f"evaluation/{n}" in logged]
    if not wanted:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            local = Path(client.download_artifacts(run_id, f"evaluation/{name}", tmp))
            replace_atomically(folder / name, partial(shutil.copyfile, local))
