"""Compile the pipeline to kfp IR YAML, and read it back as a PipelineSpec to prove it parses."""

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.pipeline import build_pipeline


def compile_pipeline(path: Path, gpu: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(gpu=gpu), package_path=str(path))
    return path


def load_pipeline_spec(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    """Parse compiled YAML into kfp's protobuf; the first document is the PipelineSpec."""
    document = next(yaml.safe_load_all(path.read_text()))
    return json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
