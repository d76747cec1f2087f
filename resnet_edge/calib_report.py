"""Would more calibration images help? The same int8 export calibrated on half and on all of the set, compared.

If halving the set barely moves the activation ranges and the agreement with the float model, more images
will not help either; if it does, the set is too small or not representative. Ranges are read from the
artifacts themselves (ONNX QuantizeLinear scales, TFLite tensors, OpenVINO FakeQuantize ranges), so the figure is
what the runtime will use: each runtime's row names its reader (``activation_scales``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    from .registry import backend_for_file, load_target

    row = backend_for_file(path)
    if row.activation_scales is None:
        raise ModelFileError(f"{path}: the {row.name} backend cannot read activation scales")
    return load_target(row.activation_scales)(Path(path))


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
