"""Build a Bento for one registered model version: the service, the library it decodes with, and
the exported model, packed together so the Bento serves that version and no other."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import cnnops
from cnnops.contracts.served import MODEL_FILE, PACKED_MODEL_FOLDER, ServedModel
from cnnops.inference.export import VALIDATED_FILES, export_candidate, export_registered

SERVING = Path(__file__).resolve().parent
# The service image: its repository (the kustomize image name in infra/k8s) and its Dockerfile.
SERVICE_IMAGE = "cnnops-classifier"
# The ONNX serving image (infra/docker/serve.Dockerfile, `make serve-image`): a service image of a
# model whose export passed parity builds on it; one that must run Keras builds on the project image.
SERVE_IMAGE = f"cnnops-serve:{metadata.version('cnnops')}"
SERVICE_DOCKERFILE = SERVING / "service.Dockerfile"
LIBRARY = Path(cnnops.__file__).resolve().parent
# What a Bento carries of this folder: the service and what it imports, and the web page. Nothing
# else here (this builder, experiments, a stray model) goes into a Bento.
SERVICE_FILES = ("__init__.py", "service.py", "limits.py", "static")
# The library packages the service imports, and nothing above them: no training, evaluation,
# promotion, tracking or pipeline code goes into a Bento (a test holds this list to the service's
# import graph).
SERVICE_PACKAGES = ("core", "settings", "contracts", "data", "modeling", "inference", "monitoring")
# What the service imports at run time; versions are pinned to the ones this build runs with.
RUNTIME_PACKAGES = (
    "bentoml",
    "onnxruntime",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "pydantic",
    "pyyaml",
)


@dataclass(frozen=True)
class BuiltBento:
    """A Bento in the BentoML store: its tag and folder, the version it serves, and the archive
    it was also written to, if any."""

    bento: str
    path: str
    registered_model: str
    version: int | None  # None: a candidate, not registered yet
    archive: str | None = None


def package_version(name: str, reference: str = "champion", export_to: Path | None = None) -> BuiltBento:
    """Export a registered version (alias or number) and build its Bento; optionally also write
    the Bento as one portable archive (`bentoml import` reads it on another machine)."""
    import bentoml

    built = build_bento(export_registered(name, reference))
    if export_to is not None:
        export_to.parent.mkdir(parents=True, exist_ok=True)
        built = replace(built, archive=bentoml.export_bento(built.bento, str(export_to)))
    return built


def package_candidate(model_dir: Path, evaluation_dir: Path, export_to: Path) -> BuiltBento:
    """Build the Bento of a gated candidate before it is registered, for infra-validation to
    serve, and write its archive (see `build_bento` for its tag)."""
    import bentoml

    built = build_bento(export_candidate(model_dir, evaluation_dir))
    export_to.parent.mkdir(parents=True, exist_ok=True)
    return replace(built, archive=bentoml.export_bento(built.bento, str(export_to)))


def release_champion(name: str, version: int, validated: Path, export_to: Path) -> BuiltBento | None:
    """`release_version` when `version` holds `champion` now; None, saying so, when it does not
    (registration made it a challenger)."""
    from cnnops.core.console import say
    from cnnops.tracking.registry import current_champion

    holder = current_champion(name)
    if holder != version:
        say(f"release: {name} v{version} is not the champion (v{holder} is); no Bento is built for it")
        return None
    built = release_version(name, version, validated, export_to)
    say(f"release: built {built.bento} for {name} v{version} from its validated Bento")
    return built


def release_version(name: str, version: int, validated: Path, export_to: Path) -> BuiltBento:
    """The Bento of a version that became champion, built from the model file of its validated
    candidate Bento (the archive `validated`), byte for byte: what ships is what was served."""
    import bentoml

    with tempfile.TemporaryDirectory(prefix="cnnops-release-") as scratch:
        extract_validated_files(validated, Path(scratch))
        built = build_bento(export_registered(name, str(version), validated=Path(scratch)))
    export_to.parent.mkdir(parents=True, exist_ok=True)
    return replace(built, archive=bentoml.export_bento(built.bento, str(export_to)))


def extract_validated_files(archive: Path, target: Path) -> None:
    """Copy the packed model files infra-validation served (`VALIDATED_FILES`) out of a Bento
    archive into `target`; one with no Keras model is not a cnnops Bento."""
    import tarfile

    from cnnops.core.errors import CnnopsError

    with tarfile.open(archive, "r:*") as tar:
        members = {name.removeprefix("./"): name for name in tar.getnames()}
        for file in VALIDATED_FILES:
            found = members.get(f"{PACKED_MODEL_FOLDER}/{file}")
            packed = tar.extractfile(found) if found else None
            if packed is None and file == MODEL_FILE:
                raise CnnopsError(f"{archive} holds no {PACKED_MODEL_FOLDER}/{MODEL_FILE}; it is not a cnnops Bento.")
            if packed is not None:
                (target / file).write_bytes(packed.read())


def build_bento(served: ServedModel) -> BuiltBento:
    """Build `cnnops:<model>-v<N>-<source digest>` into the BentoML store ($BENTOML_HOME), once per
    version and source: a registered version never changes, so neither does its Bento. A
    candidate's is named by its run instead: `cnnops:<model>-run-<run id[:12]>-<source digest>`."""
    import bentoml
    from bentoml.exceptions import NotFound

    info = served.info
    identity = f"v{info.version}" if info.version is not None else f"run-{str(info.run_id)[:12]}"
    version = f"{info.registered_model}-{identity}-{source_digest()}".lower()
    try:
        bento = bentoml.bentos.get(f"cnnops:{version}")
    except NotFound:
        bento = make_bento(served, version)
    return BuiltBento(
        bento=str(bento.tag), path=bento.path, registered_model=info.registered_model, version=info.version
    )


def source_digest() -> str:
    """Eight hex digits over the service's and library's source: a new cnnops gives a new Bento
    for the same model version, and the same source finds the Bento it built before."""
    digest = hashlib.sha256()
    roots = [SERVING] + [LIBRARY / package for package in SERVICE_PACKAGES]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in {".py", ".html"} and "model" not in p.parts):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def copy_service(target: Path) -> None:
    """The service's part of the library into `target` (a `cnnops` folder): the package's init,
    the stage packages the service imports, and the service's own files."""
    skip = shutil.ignore_patterns("__pycache__")
    target.mkdir(parents=True)
    shutil.copy2(LIBRARY / "__init__.py", target / "__init__.py")
    for package in SERVICE_PACKAGES:
        shutil.copytree(LIBRARY / package, target / package, ignore=skip)
    (target / "serving").mkdir()
    for name in SERVICE_FILES:
        if (SERVING / name).is_dir():
            shutil.copytree(SERVING / name, target / "serving" / name, ignore=skip)
        else:
            shutil.copy2(SERVING / name, target / "serving" / name)


def make_bento(served: ServedModel, version: str) -> Any:
    import bentoml

    info = served.info
    with tempfile.TemporaryDirectory(prefix="cnnops-bento-") as scratch:
        context = Path(scratch)
        copy_service(context / "cnnops")
        # Hidden entries are writes in progress (`cnnops.core.atomic`), never part of the model.
        shutil.copytree(served.folder, context / "cnnops" / "serving" / "model", ignore=shutil.ignore_patterns(".*"))
        bento = bentoml.bentos.build(
            "cnnops.serving.service:Classifier",
            version=version,
            build_ctx=str(context),
            include=["cnnops/**"],
            labels={
                "registered_model": info.registered_model,
                "model_version": "" if info.version is None else str(info.version),
                "run_id": str(info.run_id),
            },
            description=f"cnnops image classifier: {info.registered_model} "
            + ("candidate" if info.version is None else f"v{info.version}")
            + f" (test accuracy {info.test_accuracy}).",
            python={
                "packages": [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES],
                "lock_packages": False,
            },  # already pinned; locking would resolve against the index
            docker={"python_version": "3.11"},
        )
    return bento


def runtime_image(built: BuiltBento, runtime: str, project_image: str, serve_image: str = SERVE_IMAGE) -> str:
    """The image a service of this Bento runs on: the ONNX serving image (no TensorFlow) when its
    model's export passed parity, else the project image, whose Keras serves any model. `onnx`
    and `keras` ask for one; `onnx` for a model ONNX cannot serve is one line saying why."""
    from cnnops.contracts.served import read_served_model
    from cnnops.core.errors import CnnopsError
    from cnnops.inference.runtime import onnx_problem

    if runtime == "keras":
        return project_image
    served = read_served_model(Path(built.path) / PACKED_MODEL_FOLDER)
    problem = onnx_problem(served.export, served.folder)
    if problem is None:
        return serve_image
    if runtime == "onnx":
        raise CnnopsError(f"no ONNX service image for {built.bento}: {problem}")
    return project_image


def containerize(built: BuiltBento, base_image: str, repository: str = SERVICE_IMAGE) -> list[str]:
    """Build the service image of a built Bento on `base_image` (`runtime_image`); returns its
    tags (`REPOSITORY:<bento version>` and `REPOSITORY:latest`).

    The base image already holds every package the service imports, so nothing is installed
    and nothing is downloaded: the build only copies the Bento in.
    """
    from cnnops.core.containers import find_image, open_docker

    version = built.bento.split(":", 1)[1]
    tags = [f"{repository}:{version}", f"{repository}:latest"]
    client = open_docker()
    try:
        if base_image == SERVE_IMAGE:
            find_image(client, base_image, "ONNX serving image", "serve-image")
        else:
            find_image(client, base_image)
        with tempfile.TemporaryDirectory(prefix="cnnops-service-image-") as scratch:
            context = Path(scratch)
            shutil.copy2(SERVICE_DOCKERFILE, context / "Dockerfile")
            shutil.copytree(built.path, context / "bento")
            image, _ = client.images.build(
                path=str(context),
                tag=tags[0],
                rm=True,
                pull=False,
                buildargs={
                    "RUNTIME_IMAGE": base_image,
                    "BENTO": built.bento,
                    "REGISTERED_MODEL": built.registered_model,
                    "MODEL_VERSION": str(built.version),
                },
            )
        image.tag(repository, "latest")
    finally:
        client.close()
    return tags
