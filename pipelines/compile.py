"""Compile the pipeline to kfp IR YAML, and read it back as a PipelineSpec and a PlatformSpec to
prove both parse."""

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from cnnops.components import BASE_IMAGE
from cnnops.pipelines.pipeline import build_pipeline
from cnnops.pipelines.platform import Platform


def compile_pipeline(path: Path, platform: Platform = Platform(), image: str | None = None) -> Path:  # noqa: B008
    """Write the IR with its platform spec; `image` names the project image in a registry
    (`REGISTRY/cnnops:TAG`) for every task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(platform), package_path=str(path))
    if image is not None:
        set_task_image(path, image)
    return path


def set_task_image(path: Path, image: str) -> None:
    """Point every task's container at `image`, keeping the rest of the file (and its header) as kfp
    wrote it: the IR names the image once per executor, as `image: NAME`."""
    text = path.read_text()
    path.write_text(text.replace(f"image: {BASE_IMAGE}\n", f"image: {image}\n"))


def read_ir_documents(path: Path) -> list[dict]:
    """The compiled YAML's documents, parsed with libyaml where PyYAML has it (the pure-Python
    parser takes seconds for the pipeline's IR)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return list(yaml.load_all(path.read_text(), Loader=loader))


def load_pipeline_spec(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    """Parse compiled YAML into kfp's protobuf; the first document is the PipelineSpec."""
    return json_format.ParseDict(read_ir_documents(path)[0], pipeline_spec_pb2.PipelineSpec())


def load_platform_spec(path: Path) -> pipeline_spec_pb2.PlatformSpec:
    """The second document: the Kubernetes settings of each executor (volumes, secrets, tolerations)."""
    return json_format.ParseDict(read_ir_documents(path)[1], pipeline_spec_pb2.PlatformSpec())
