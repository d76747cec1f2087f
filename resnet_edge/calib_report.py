"""Would more calibration images help? The same int8 export calibrated on half and on all of the set, compared.

If halving the set barely moves the activation ranges and the agreement with the float model, more images
will not help either; if it does, the set is too small or not representative. Ranges are read from the
artifacts themselves (ONNX QuantizeLinear scales, TFLite per-tensor activation scales), so the figure is
what the runtime will use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import lazy_import
from .errors import ModelFileError


@dataclass
class CalibrationReport:
    """Parity with half and with all of the calibration images, and how far the activation ranges moved."""

    half_images: int
    full_images: int
    half: Any
    full: Any
    tensors: int
    median_range_change: float
    max_range_change: float
    most_changed: str | None

    def lines(self) -> list[str]:
        def agreement(report: Any) -> str:
            top1 = "–" if report.top1_agreement is None else f"{report.top1_agreement:.2%}"
            return f"top-1 agree {top1}, cos {report.cosine:.6f}"

        moved = (f"activation ranges moved by {self.median_range_change:.1%} (median) and "
                 f"{self.max_range_change:.1%} (max, {self.most_changed}) over {self.tensors} tensors")
        return [f"calibration with {self.half_images} images: {agreement(self.half)}",
                f"calibration with {self.full_images} images: {agreement(self.full)}", moved]

    def to_dict(self) -> dict[str, Any]:
        return {"half_images": self.half_images, "full_images": self.full_images,
                "half": self.half.to_dict(), "full": self.full.to_dict(), "tensors": self.tensors,
                "median_range_change": self.median_range_change, "max_range_change": self.max_range_change,
                "most_changed": self.most_changed}


def activation_scales(path: str | os.PathLike[str]) -> dict[str, float]:
    """Per-tensor activation scale by tensor name, read by the artifact's backend (its row's hook)."""
    from .registry import resolve, row_for_file

    row = row_for_file(path)
    if row.activation_scales is None:
        raise ModelFileError(f"{path}: the {row.name} backend cannot read activation scales")
    return resolve(row.activation_scales)(Path(path))


def onnx_activation_scales(path: Path) -> dict[str, float]:
    """An int8 ``.onnx``'s activation scales: the per-tensor scales of its QuantizeLinear nodes."""
    onnx = lazy_import("onnx", extra="export")
    numpy_helper = lazy_import("onnx.numpy_helper", extra="export")
    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scales = {}
    for node in graph.node:
        scale = constants.get(node.input[1]) if node.op_type == "QuantizeLinear" else None
        if scale is not None and scale.size == 1:
            scales[node.input[0]] = float(scale.reshape(()))
    return scales


def tflite_activation_scales(path: Path) -> dict[str, float]:
    """An int8 ``.tflite``'s activation scales: the int8/uint8 tensors with one (per-tensor) scale."""
    interpreter = lazy_import("ai_edge_litert.interpreter", extra="tflite").Interpreter(model_path=str(path))
    scales = {}
    for detail in interpreter.get_tensor_details():
        parameters = detail.get("quantization_parameters", {})
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and len(parameters.get("scales", ())) == 1:
            scales[detail["name"]] = float(parameters["scales"][0])
    return scales


def openvino_activation_scales(path: Path) -> dict[str, float]:
    """An int8 OpenVINO IR's activation scales: each per-tensor FakeQuantize's ``(high - low) / (levels - 1)``
    on its output range, by the name of the node it quantizes (Q/DQ and NNCF artifacts alike)."""
    ov = lazy_import("openvino", extra="openvino")
    model = ov.Core().read_model(str(path))
    scales = {}
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        source = op.input_value(0).get_node()
        if source.get_type_name() == "Constant":  # a weight's fake quantization, per channel
            continue
        bounds = [op.input_value(i).get_node() for i in (3, 4)]
        if not all(b.get_type_name() == "Constant" for b in bounds):
            continue
        low, high = (np.asarray(b.get_data(), dtype=np.float64) for b in bounds)
        if low.size == 1 and high.size == 1:
            scales[source.get_friendly_name()] = float((high - low).reshape(()) / (int(op.get_levels()) - 1))
    return scales


def calibration_report(artifact: str | os.PathLike[str], full_report: Any, calibration: Any,
                       rebuild: Callable[[Any, Path], Any], verify: Callable[[Path, str], Any]) -> CalibrationReport:
    """Export again from every other calibration image and compare it with ``artifact``.

    ``full_report`` is the verification of ``artifact`` (calibrated on the whole set); ``rebuild(calibration,
    path)`` exports the same format with the same options from another calibration set, ``verify(path, label)``
    checks it on the images ``artifact`` was checked on.
    """
    from .calibration import CalibrationSet

    half = CalibrationSet(calibration.images[::2], calibration.holdout, calibration.source, calibration.batch_size)
    artifact = Path(artifact)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-calib-report-") as workdir:
        half_path = Path(workdir) / artifact.name
        rebuild(half, half_path)
        half_report = verify(half_path, f"{full_report.name} ({len(half)} images)")
        half_scales = activation_scales(half_path)
    full_scales = activation_scales(artifact)
    shared = sorted(set(half_scales) & set(full_scales))
    changes = {name: abs(half_scales[name] / full_scales[name] - 1.0) for name in shared if full_scales[name] > 0}
    most = max(changes, key=changes.get) if changes else None
    values = np.array(list(changes.values())) if changes else np.zeros(1)
    return CalibrationReport(len(half), len(calibration), half_report, full_report, len(changes),
                             float(np.median(values)), float(values.max()), most)
