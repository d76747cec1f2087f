"""What this machine really gives TensorFlow/Keras, the float reference (``resnet-edge doctor``): a small op is run
on the CPU and on each GPU TensorFlow sees."""

from __future__ import annotations

from typing import Any

from ... import machine
from ..._lazy import import_tensorflow
from ..._quiet import quiet
from ...errors import first_line


def _run_on(tf: Any, device: str) -> dict[str, Any]:
    try:
        with quiet(), tf.device(device):
            value = float(tf.reduce_sum(tf.nn.relu(tf.constant([[-1.0, 2.0], [3.0, -4.0]]))).numpy())
    except Exception as exc:
        return {"ok": False, "detail": f"cannot run on {device}: {first_line(exc, 200)}"}
    if value != 5.0:
        return {"ok": False, "detail": f"ran on {device} but returned {value}"}
    return {"ok": True, "detail": f"ran an op on {device}"}


def probe() -> dict[str, Any]:
    """TensorFlow's CPU and GPUs, each proved by running an op; whether this TensorFlow was built with CUDA."""
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    built_with_cuda = bool(tf.test.is_built_with_cuda())
    facts = {"tensorflow": tf.__version__, "built_with_cuda": built_with_cuda, "gpus": [g.name for g in gpus]}
    devices = {"cpu": _run_on(tf, "/CPU:0")}
    missing = []
    if gpus:
        devices["cuda"] = _run_on(tf, "/GPU:0")
    else:
        why = "TensorFlow sees no GPU" + ("" if built_with_cuda else " (this TensorFlow was built without CUDA)")
        devices["cuda"] = {"ok": False, "detail": why}
        if machine.nvidia_gpus().get("gpus") and not built_with_cuda:
            missing.append("pip install 'tensorflow[and-cuda]'  (only to train or run the Keras model on the GPU; "
                           "exporting needs none)")
    return {"devices": devices, "facts": facts, "missing": missing}
