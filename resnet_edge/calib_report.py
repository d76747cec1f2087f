"""Would more calibration images help? The same int8 export calibrated on half and on all of the set, compared.

If halving the set barely moves the activation ranges and the agreement with the float model, more images
will not help either; if it does, the set is too small or not representative. Ranges are read from the
artifacts themselves (ONNX QuantizeLinear scales, TFLite per-tensor activation scales), so the figure is
what the runtime will use.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import lazy_import


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
    """Per-tensor activation scale by tensor name, from an int8 ``.onnx`` (Q/DQ) or ``.tflite`` file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
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
    interpreter = lazy_import("ai_edge_litert.interpreter", extra="tflite").Interpreter(model_path=str(path))
    scales = {}
    for detail in interpreter.get_tensor_details():
        parameters = detail.get("quantization_parameters", {})
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and len(parameters.get("scales", ())) == 1:
            scales[detail["name"]] = float(parameters["scales"][0])
    return scales


def calibration_report(model: Any, format: str, artifact: str | os.PathLike[str], full_report: Any,
                       calibration: Any, verify_data: Any = None, verify_count: int = 500,
                       preprocessing: str | None = None, **options: Any) -> CalibrationReport:
    """Export ``format`` again from every other calibration image and compare it with ``artifact``.

    ``full_report`` is the verification of ``artifact`` (calibrated on the whole set); both are checked
    on the same images, the hold-out of the whole set unless ``verify_data`` is given.
    """
    from .calibration import CalibrationSet
    from .export import export, load_source, resolve_format
    from .models.resnet import with_preprocessing
    from .parity import verify_artifact

    if isinstance(model, (str, os.PathLike)):
        model = load_source(Path(model))[0]
    if preprocessing is not None:
        model = with_preprocessing(model, preprocessing)
    half = CalibrationSet(calibration.images[::2], calibration.holdout, calibration.source, calibration.batch_size)
    data = verify_data if verify_data is not None else calibration.holdout
    artifact = Path(artifact)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-calib-report-") as workdir:
        half_path = Path(workdir) / artifact.name
        export(model, format, half_path, calibration=half, verify=False, **options)
        half_report = verify_artifact(model, half_path, resolve_format(format).precision, data, count=verify_count,
                                      label=f"{format} ({len(half)} images)")
        half_scales = activation_scales(half_path)
    full_scales = activation_scales(artifact)
    shared = sorted(set(half_scales) & set(full_scales))
    changes = {name: abs(half_scales[name] / full_scales[name] - 1.0) for name in shared if full_scales[name] > 0}
    most = max(changes, key=changes.get) if changes else None
    values = np.array(list(changes.values())) if changes else np.zeros(1)
    return CalibrationReport(len(half), len(calibration), half_report, full_report, len(changes),
                             float(np.median(values)), float(values.max()), most)

