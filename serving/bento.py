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
from cnnops.export import ServedModel, export_registered

SERVING = Path(__file__).resolve().parent
# The service image: its repository (the kustomize image name in infra/k8s) and its Dockerfile.
SERVICE_IMAGE = "cnnops-classifier"
SERVICE_DOCKERFILE = SERVING / "service.Dockerfile"
LIBRARY = Path(cnnops.__file__).resolve().parent
# What a Bento carries of this folder: the service and what it imports, and the web page. Nothing
# else here (this builder, experiments, a stray model) goes into a Bento.
SERVICE_FILES = ("__init__.py", "service.py", "limits.py", "static")
# What the service imports at run time; versions are pinned to the ones this build runs with.
RUNTIME_PACKAGES = ("bentoml", "tensorflow", "keras", "numpy", "pandas", "pyarrow", "pillow", "pydantic", "pyyaml")


@dataclass(frozen=True)
class BuiltBento:
    """A Bento in the BentoML store: its tag and folder, the version it serves, and the archive
    it was also written to, if any."""

    bento: str
    path: str
    registered_model: str
    version: int
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


def build_bento(served: ServedModel) -> BuiltBento:
    """Build `cnnops:<model>-v<N>-<source digest>` into the BentoML store ($BENTOML_HOME), once per
    version and source: a registered version never changes, so neither does its Bento."""
    import bentoml
    from bentoml.exceptions import NotFound

    info = served.info
    version = f"{info.registered_model}-v{info.version}-{source_digest()}".lower()
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
    for root in (SERVING, LIBRARY):
        for path in sorted(p for p in root.rglob("*") if p.suffix in {".py", ".html"} and "model" not in p.parts):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def copy_service(target: Path) -> None:
    target.mkdir(parents=True)
    for name in SERVICE_FILES:
        if (SERVING / name).is_dir():
            shutil.copytree(SERVING / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(SERVING / name, target / name)


def make_bento(served: ServedModel, version: str) -> Any:
    import bentoml

    info = served.info
    with tempfile.TemporaryDirectory(prefix="cnnops-bento-") as scratch:
        context = Path(scratch)
        copy_service(context / "serving")
        # Hidden entries are writes in progress (`cnnops.atomic`), never part of the model.
        shutil.copytree(served.folder, context / "serving" / "model", ignore=shutil.ignore_patterns(".*"))
        shutil.copytree(LIBRARY, context / "cnnops", ignore=shutil.ignore_patterns("__pycache__"))
        bento = bentoml.bentos.build(
            "serving.service:Classifier",
            version=version,
            build_ctx=str(context),
            include=["serving/**", "cnnops/**"],
            labels={
                "registered_model": info.registered_model,
                "model_version": str(info.version),
                "run_id": str(info.run_id),
            },
            description=f"cnnops image classifier: {info.registered_model} v{info.version} "
            f"(test accuracy {info.test_accuracy}).",
            python={
                "packages": [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES],
                "lock_packages": False,
            },  # already pinned; locking would resolve against the index
            docker={"python_version": "3.11"},
        )
    return bento


def containerize(built: BuiltBento, project_image: str, repository: str = SERVICE_IMAGE) -> list[str]:
    """Build the service image of a built Bento on the project image; returns its tags
    (`REPOSITORY:<bento version>` and `REPOSITORY:latest`).

    The project image already holds every package the service imports, so nothing is installed
    and nothing is downloaded: the build only copies the Bento in.
    """
    from cnnops.containers import find_image, open_docker

    version = built.bento.split(":", 1)[1]
    tags = [f"{repository}:{version}", f"{repository}:latest"]
    client = open_docker()
    try:
        find_image(client, project_image)
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
                    "PROJECT_IMAGE": project_image,
                    "BENTO": built.bento,
                    "REGISTERED_MODEL": built.registered_model,
                    "MODEL_VERSION": str(built.version),
                },
            )
        image.tag(repository, "latest")
    finally:
        client.close()
    return tags
