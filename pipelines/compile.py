"""Compile the pipeline to kfp IR YAML, and read it back as a PipelineSpec to prove it parses."""

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from components import BASE_IMAGE
from pipelines.pipeline import build_pipeline


def compile_pipeline(path: Path, gpu: bool = False, image: str | None = None) -> Path:
    """Write the IR; `image` names the project image in a registry (`REGISTRY/cnnops:TAG`) for every task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(gpu=gpu), package_path=str(path))
    if image is not None:
        set_task_image(path, image)
    return path


def set_task_image(path: Path, image: str) -> None:
    """Point every task's container at `image`, keeping the rest of the file (and its header) as kfp
    wrote it: the IR names the image once per executor, as `image: NAME`."""
    text = path.read_text()
    path.write_text(text.replace(f"image: {BASE_IMAGE}\n", f"image: {image}\n"))


def load_pipeline_spec(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    """Parse compiled YAML into kfp's protobuf; the first document is the PipelineSpec."""
    document = next(yaml.safe_load_all(path.read_text()))
    return json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
