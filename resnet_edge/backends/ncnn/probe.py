"""What this machine really gives NCNN (``resnet-edge doctor``): a one-layer net (a ReLU) loaded from memory and
run on the CPU; whether pnnx's converter binary, which exporting needs, is there; the Vulkan GPUs NCNN sees."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...errors import MissingDependencyError, first_line

ONE_LAYER = "7767517\n2 2\nInput in0 0 1 in0\nReLU relu 1 1 in0 out0\n"


def _run_on_cpu(ncnn: Any) -> dict[str, Any]:
    x = np.array([[[-1.0, 0.5, 2.0, -3.0]]], dtype=np.float32)
    try:
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        reader = ncnn.DataReaderFromEmpty()  # a ReLU has no weights; kept alive while the net reads it
        if net.load_param_mem(ONE_LAYER) != 0 or net.load_model(reader) != 0:
            return {"ok": False, "detail": "cannot load a one-layer net"}
        with net.create_extractor() as extractor:
            extractor.input("in0", ncnn.Mat(x).clone())  # cloned, as the backend does: a borrowed Mat has crashed
            status, out = extractor.extract("out0")
            y = np.array(out, dtype=np.float32).reshape(x.shape)
    except Exception as exc:
        return {"ok": False, "detail": f"cannot run a one-layer net: {first_line(exc, 200)}"}
    if status != 0 or not np.array_equal(y, np.maximum(x, 0)):
        return {"ok": False, "detail": f"ran a one-layer net but got status {status}, {y.tolist()}"}
    return {"ok": True, "detail": "ran a one-layer net on the CPU"}


def probe() -> dict[str, Any]:
    """NCNN on the CPU (proved by a run), its Vulkan GPU count, and pnnx for exporting."""
    from . import RUNTIME
    from .convert import pnnx_binary

    ncnn = lazy_import("ncnn", extra="ncnn")
    facts: dict[str, Any] = {}
    try:
        with quiet():  # a missing libvulkan is announced on stderr
            facts["vulkan_gpus"] = int(ncnn.get_gpu_count())
    except Exception:  # a build without Vulkan
        facts["vulkan_gpus"] = 0
    exports, missing = {}, []
    try:
        facts["pnnx"] = pnnx_binary()
    except MissingDependencyError as exc:
        exports = {row.name: str(exc) for row in RUNTIME.formats}
        missing.append(str(exc).split(": ", 1)[-1])
    return {"devices": {"cpu": _run_on_cpu(ncnn)}, "facts": facts, "exports": exports, "missing": missing}
