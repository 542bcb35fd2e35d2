"""Infra-validate a Bento: unpack its archive and let the library serve and check it in a real
`bentoml serve` (`cnnops.promotion.infra_validation`). The pipeline's infra-validate step calls
`validate_bento_archive`; `cnnops register` and `cnnops import-model` call `validate_candidate`,
which builds the candidate's Bento first."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from cnnops.contracts.infra import InfraValidation, write_infra_validation
from cnnops.core.console import say
from cnnops.core.errors import CnnopsError
from cnnops.promotion.infra_validation import SERVER_LOG, infra_validate, log_infra_validation
from cnnops.serving.bento import package_candidate
from cnnops.settings.config import Config


def validate_candidate(model_dir: Path, evaluation_dir: Path, config: Config) -> InfraValidation:
    """Package and infra-validate one candidate; the outcome and the server's log are kept in its
    MLflow run, the scratch Bento archive is not."""
    with tempfile.TemporaryDirectory(prefix="cnnops-candidate-") as scratch:
        out = Path(scratch)
        built = package_candidate(model_dir, evaluation_dir, out / "cnnops.bento")
        return validate_bento_archive(Path(str(built.archive)), built.bento, evaluation_dir, config, out / "outcome")


def validate_bento_archive(
    archive: Path, bento: str, evaluation_dir: Path, config: Config, out_dir: Path
) -> InfraValidation:
    """Infra-validate the candidate Bento in `archive` (the package step's output): unpack it,
    serve it, check it, and keep the outcome and the server's log in `out_dir` and in the
    candidate's MLflow run."""
    with tempfile.TemporaryDirectory(prefix="cnnops-infra-") as scratch:
        folder = unpack_bento(archive, Path(scratch) / "bento")
        validation = infra_validate(
            folder, bento, evaluation_dir, config.infra_validation, config.serve, out_dir / SERVER_LOG, config.export
        )
    write_infra_validation(out_dir, validation)
    log_infra_validation(out_dir)
    verdict = "passed" if validation.passed else "FAILED"
    say(f"infra-validate: {bento} {verdict}: {validation.reason}")
    return validation


def unpack_bento(archive: Path, target: Path) -> Path:
    """Unpack an exported Bento archive (`bentoml export`) into `target`; returns its folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            unsafe = [m.name for m in members if not is_plain_member(m)]
            if unsafe:
                raise CnnopsError(f"{archive} holds {unsafe[0]}, a link or a path outside the Bento; refusing it.")
            tar.extractall(target, members=members)  # noqa: S202 - every member checked above
    except (OSError, tarfile.TarError) as err:
        raise CnnopsError(f"{archive} is not a readable Bento archive ({err}); run the package step again.") from None
    if not (target / "bento.yaml").is_file():
        raise CnnopsError(f"{archive} holds no bento.yaml; it is not a Bento archive.")
    return target


def is_plain_member(member: tarfile.TarInfo) -> bool:
    """A file or folder that stays inside the folder it is unpacked in (the project image's Python
    predates tarfile's extraction filters)."""
    path = Path(member.name)
    return (member.isfile() or member.isdir()) and not path.is_absolute() and ".." not in path.parts
