"""Exports of one registered version, side by side: each format cnnops writes (ONNX, LiteRT,
SavedModel) and Keras 3's own `model.export(format="onnx")`, each held to the Keras model on the
parity images its evaluation kept, with the time to write and check it and the file's size.

    .venv/bin/python bench/export.py [--model-name cnnops-animals] [--version champion]
                                     [--out bench/results/export.json]

Keras's own export is measured through the same parity check (`measure_parity`) and the same
ONNX Runtime session as cnnops's, so the two ONNX rows differ only in how the file was written.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def keras_own_onnx(model: Any, spec: Any, path: Path) -> None:
    """Keras 3's own ONNX export of the served outputs (probabilities and embedding, joined)."""
    import keras
    import numpy as np

    joined = keras.Model(model.inputs, keras.layers.Concatenate()(model.outputs))
    joined(np.zeros((1, spec.height, spec.width, spec.channels), np.uint8))
    joined.export(str(path), format="onnx", verbose=False)


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (a SavedModel)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-name", default="cnnops-animals")
    parser.add_argument("--version", default="champion")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnops.contracts.export import EXPORT_FORMATS, read_parity_images
    from cnnops.core.paths import keep_tool_state_inside
    from cnnops.inference.export import export_registered
    from cnnops.modeling.convert import WRITERS, export_model
    from cnnops.modeling.predict import load_keras_model
    from cnnops.settings.config import ExportConfig

    keep_tool_state_inside()
    served = export_registered(args.model_name, args.version)
    pixels = read_parity_images(served.folder)
    if pixels is None:
        raise SystemExit(f"{served.folder} keeps no parity images; evaluate the version again")
    model = load_keras_model(served.folder)
    writers = {f"cnnops {fmt}": (fmt, WRITERS[fmt]) for fmt in EXPORT_FORMATS}
    writers["Keras model.export onnx"] = ("onnx", keras_own_onnx)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, (fmt, writer) in writers.items():
            kept = WRITERS[fmt]
            WRITERS[fmt] = writer
            try:
                target = Path(scratch) / label.replace(" ", "-")
                began = time.perf_counter()
                report = export_model(model, served.spec, pixels, fmt, target, ExportConfig())
                seconds = time.perf_counter() - began
            finally:
                WRITERS[fmt] = kept
            rows[label] = {
                "seconds": seconds,
                "bytes": size_of(target) if target.exists() else None,
                "report": report.model_dump(mode="json"),
            }
            print(f"{label:>24}  {seconds:5.1f} s  {report.verdict()}", flush=True)
    record = {
        "model": args.model_name,
        "version": served.info.version,
        "parameters": model.count_params(),
        "keras_bytes": size_of(served.folder / "model.keras"),
        "images": len(pixels),
        "cpus": os.cpu_count(),
        "exports": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
