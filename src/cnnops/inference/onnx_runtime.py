"""The exported model run by ONNX Runtime: uint8 images in, `[probabilities | embedding]` out, with
neither TensorFlow nor Keras in the process. A file ONNX Runtime cannot load is one line at
start-up, never a crash on the first request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnops.contracts.export import TensorSignature
from cnnops.core.errors import CnnopsError

if TYPE_CHECKING:
    import onnxruntime

# The CUDA provider when this machine has a GPU and the GPU build of ONNX Runtime; else the CPU.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class OnnxModel:
    """A loaded ONNX model: its session, its one input and the providers it runs on."""

    session: onnxruntime.InferenceSession
    input_name: str
    providers: tuple[str, ...]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 rows of `[probabilities | embedding]` for a uint8 N×H×W×C batch."""
        (outputs,) = self.session.run(None, {self.input_name: pixels})
        return np.asarray(outputs, dtype=np.float32)

    def signature(self) -> tuple[list[TensorSignature], list[TensorSignature]]:
        """The inputs and outputs as ONNX Runtime reports them (unknown sizes as None)."""
        return describe(self.session.get_inputs()), describe(self.session.get_outputs())


def describe(tensors: list[onnxruntime.NodeArg]) -> list[TensorSignature]:
    return [
        TensorSignature(name=t.name, shape=[d if isinstance(d, int) else None for d in t.shape], dtype=t.type)
        for t in tensors
    ]


def pick_providers() -> tuple[str, ...]:
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    return tuple(p for p in PREFERRED_PROVIDERS if p in available)


def load_onnx_model(path: Path, height: int, width: int, channels: int, threads: int = 0) -> OnnxModel:
    """Load `path` with `threads` per model call (0: ONNX Runtime's choice) and check that it takes
    one uint8 image batch of the served size and gives one output; anything else is one line naming
    the file."""
    import onnxruntime

    if not path.is_file():
        raise CnnopsError(f"{path} is missing; export the model again with `cnnops export --format onnx`.")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's to act on
    options.intra_op_num_threads = threads
    # Idle threads sleep instead of spinning: they share the cores with decoding and the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = pick_providers()
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own pybind classes, one per kind of fault
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnopsError(
            f"{path} is not a model ONNX Runtime can load ({reason[:200]}); export it again with "
            "`cnnops export --format onnx`."
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    wanted = [None, height, width, channels]
    if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or describe(inputs)[0].shape[1:] != wanted[1:]:
        raise CnnopsError(
            f"{path} does not take uint8 images of {height}×{width}×{channels} "
            f"(it takes {', '.join(f'{i.type} {i.shape}' for i in inputs)}); export it again with `cnnops export`."
        )
    if len(outputs) != 1:
        raise CnnopsError(f"{path} gives {len(outputs)} outputs, not one [probabilities | embedding]; export it again.")
    return OnnxModel(session, inputs[0].name, tuple(session.get_providers()))
