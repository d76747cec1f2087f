"""What this machine really gives OpenVINO (``resnet-edge doctor``): the devices OpenVINO lists, each with its
name, and a one-node model compiled and run on the CPU (the device this project's OpenVINO backend uses)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ...errors import first_line


def _run_on_cpu(ov: Any, core: Any) -> dict[str, Any]:
    opset = lazy_import("openvino.opset13", extra="openvino")
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], dtype=np.float32)
    try:
        parameter = opset.parameter([1, 4], np.float32, name="x")
        compiled = core.compile_model(ov.Model([opset.relu(parameter)], [parameter], "probe"), "CPU")
        y = np.asarray(next(iter(compiled([x]).values())))
    except Exception as exc:
        return {"ok": False, "detail": f"cannot compile or run a model on CPU: {first_line(exc, 200)}"}
    if not np.array_equal(y, np.maximum(x, 0)):
        return {"ok": False, "detail": f"ran a one-node model on CPU but returned {y.tolist()}"}
    return {"ok": True, "detail": "compiled and ran a one-node model on CPU"}


def probe() -> dict[str, Any]:
    """OpenVINO's devices (CPU, GPU, NPU where present) by name; the CPU proved by running a model."""
    ov = lazy_import("openvino", extra="openvino")
    core = ov.Core()
    listed = {}
    for device in core.available_devices:
        try:
            listed[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except Exception as exc:
            listed[device] = f"? ({first_line(exc, 100)})"
    cpu = _run_on_cpu(ov, core) if "CPU" in listed else {"ok": False, "detail": "OpenVINO lists no CPU device"}
    return {"devices": {"cpu": cpu}, "facts": {"openvino_devices": listed}}
