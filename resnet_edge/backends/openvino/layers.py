"""OpenVINO's hook for ``--calib-report``: the activation scales of an int8 IR (its FakeQuantize ranges)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._lazy import lazy_import


def activation_scales(path: Path) -> dict[str, float]:
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
