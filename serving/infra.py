"""Infra-validate a gated candidate outside a pipeline (`cnnops register`, `cnnops import-model`):
build its Bento, then serve and check it as the pipeline's infra-validate step does."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cnnops.config import Config
from cnnops.infra_validation import InfraValidation, validate_bento_archive
from serving.bento import package_candidate


def validate_candidate(model_dir: Path, evaluation_dir: Path, config: Config) -> InfraValidation:
    """Package and infra-validate one candidate; the outcome and the server's log are kept in its
    MLflow run, the scratch Bento archive is not."""
    with tempfile.TemporaryDirectory(prefix="cnnops-candidate-") as scratch:
        out = Path(scratch)
        built = package_candidate(model_dir, evaluation_dir, out / "cnnops.bento")
        return validate_bento_archive(Path(str(built.archive)), built.bento, evaluation_dir, config, out / "outcome")
