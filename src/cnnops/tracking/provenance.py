"""The provenance tags every cnnops MLflow run carries, whichever step opens it (train, a sweep's
parent, an import, validate, a baseline): where the data came from, which code made the run, and
with which settings, so that any run can be traced and two runs compared on the same terms.
"""

from __future__ import annotations

import hashlib
import json

import cnnops
from cnnops.contracts.dataset import DatasetInfo
from cnnops.settings.config import Config
from cnnops.tracking.stores import git_commit


def provenance_tags(
    info: DatasetInfo, config: Config, registered_model: str, pipeline_run: str = "manual"
) -> dict[str, str]:
    """The data source and fingerprint, the git commit (also under MLflow's own key, which its UI
    shows), the cnnops version, a digest of the resolved config, the pipeline run and the
    registered model the run belongs to."""
    commit = git_commit()
    return {
        "cnnops.data_source": info.source,
        "cnnops.dataset_fingerprint": info.fingerprint,
        "cnnops.git_commit": commit,
        "mlflow.source.git.commit": commit,
        "cnnops.version": cnnops.__version__,
        "cnnops.config_hash": config_hash(config),
        "cnnops.pipeline_run": pipeline_run,
        "cnnops.registered_model": registered_model,
    }


def config_hash(config: Config) -> str:
    """A digest of the resolved config: equal exactly when every setting is."""
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
