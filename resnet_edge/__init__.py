"""resnet-edge: Keras ResNet to a fast, verified model on an edge device.

Importing the package is light (no TensorFlow, ONNX Runtime or TensorRT); the re-exported
functions import what they need when called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_resnet": "resnet_edge.models.resnet",
    "export": "resnet_edge.exporter",
    "export_formats": "resnet_edge.exporter",
    "load": "resnet_edge.predictor",
    "Predictor": "resnet_edge.predictor",
    "CalibrationSet": "resnet_edge.calibration",
    "compare": "resnet_edge.parity",
    "measure": "resnet_edge.latency",
    "load_dataset": "resnet_edge.data",
    "ModelMetadata": "resnet_edge.metadata",
    "ResnetEdgeError": "resnet_edge.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnet_edge' has no attribute {name!r}")
