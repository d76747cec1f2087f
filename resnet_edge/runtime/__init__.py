"""Backend registry and ``load()``: the runtime is chosen from the file suffix, the device from what is there."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError, InvalidArgumentError, ModelFileError
from .base import DEVICES, Backend, Prediction, PredictionRun, Predictor


@dataclass(frozen=True)
class Registration:
    name: str
    target: str
    suffixes: tuple[str, ...]


BACKENDS: dict[str, Registration] = {
    r.name: r
    for r in (
        Registration("keras", "resnet_edge.runtime.keras:KerasBackend", (".keras", ".h5")),
        Registration("onnxruntime", "resnet_edge.runtime.onnxrt:OnnxRuntimeBackend", (".onnx",)),
        Registration("tflite", "resnet_edge.runtime.tflite:TFLiteBackend", (".tflite",)),
        Registration("tensorrt", "resnet_edge.runtime.tensorrt:TensorRTBackend", (".engine", ".plan")),
        Registration("jetson", "resnet_edge.runtime.jetson:JetsonBackend", ()),
    )
}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _on_jetson() -> bool:
    from .jetson import is_jetson

    return is_jetson()


def backend_for(path: str | os.PathLike[str], device: str = "auto") -> str:
    """The backend name for an artifact, from its suffix (TensorRT engines on a Jetson use ``jetson``)."""
    suffix = Path(path).suffix.lower()
    for registration in BACKENDS.values():
        if suffix in registration.suffixes:
            if registration.name == "tensorrt" and (device == "jetson" or (device == "auto" and _on_jetson())):
                return "jetson"
            return registration.name
    known = sorted(s for r in BACKENDS.values() for s in r.suffixes)
    raise ModelFileError(f"{path}: unknown model suffix {suffix or '(none)'!r}; expected one of {', '.join(known)}")


def load(
    path: str | os.PathLike[str], device: str = "auto", backend: str | None = None, threads: int | None = None
) -> Predictor:
    """Open an artifact as a Predictor; ``device="auto"`` takes the first device that really works."""
    path = Path(path)
    if device not in DEVICES:
        raise InvalidArgumentError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InvalidArgumentError("threads must be at least 1")
    name = backend or backend_for(path, device)
    cls = backend_class(name)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    if device != "auto":
        if device not in cls.devices:
            raise DeviceError(f"the {name} backend runs on {', '.join(cls.devices)}, not {device}")
        return Predictor(cls(path, device, threads))
    candidates = [d for d in cls.devices if d in cls.available_devices()]
    errors = []
    for candidate in candidates:
        try:
            return Predictor(cls(path, candidate, threads))
        except DeviceError as exc:
            errors.append(str(exc))
    raise DeviceError(f"no usable device for {name}: {'; '.join(errors) or 'none available'}")


__all__ = ["BACKENDS", "Backend", "Prediction", "PredictionRun", "Predictor", "backend_class", "backend_for", "load"]
