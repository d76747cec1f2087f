"""LiteRT's hooks for the int8 tools: every intermediate tensor readable (the layer-wise diagnosis), and the
per-tensor activation scales of an int8 file (``--calib-report``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..._lazy import lazy_import
from ...preprocess import cast_batch, dequantize
from ...runtime import Intermediates
from .backend import TFLiteBackend, tensor_quantization


class _KeepingTensors(TFLiteBackend):
    keep_intermediates = True


def _readable(detail: dict) -> bool:
    """Floats, or integers with one scale (per-channel ones are weights, not activations)."""
    dtype = np.dtype(detail["dtype"])
    scales = detail.get("quantization_parameters", {}).get("scales")
    per_tensor = scales is None or len(scales) <= 1
    return bool(np.issubdtype(dtype, np.floating)
                or (np.issubdtype(dtype, np.integer) and detail["quantization"][0] and per_tensor))


def intermediates(path: Path) -> Intermediates:
    """The interpreter keeps every intermediate tensor; integer ones are dequantized with their own scale."""
    backend = _KeepingTensors(path, "cpu")
    interpreter = backend.interpreter
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    produced = sorted({int(i) for op in interpreter._get_ops_details() for i in op["outputs"]})
    tensors = [(str(i), details[i]["name"]) for i in produced if i in details and _readable(details[i])]
    outputs = interpreter.get_output_details()
    output = str(outputs[0]["index"]) if len(outputs) == 1 and _readable(outputs[0]) else None

    def run(batch: np.ndarray, ids: Sequence[str]) -> dict[str, np.ndarray]:
        backend.run(cast_batch(batch, backend.input_spec))
        return {i: dequantize(interpreter.get_tensor(int(i)), tensor_quantization(details[int(i)])) for i in ids}

    (model_input,) = interpreter.get_input_details()
    signature = model_input.get("shape_signature")
    dynamic = signature is not None and len(signature) and int(signature[0]) == -1
    return Intermediates(tensors, output, tuple(int(d) for d in model_input["shape"][1:]),
                         None if dynamic else int(model_input["shape"][0]), run)


def activation_scales(path: Path) -> dict[str, float]:
    """An int8 ``.tflite``'s activation scales: the int8/uint8 tensors with one (per-tensor) scale."""
    interpreter = lazy_import("ai_edge_litert.interpreter", extra="tflite").Interpreter(model_path=str(path))
    scales = {}
    for detail in interpreter.get_tensor_details():
        parameters = detail.get("quantization_parameters", {})
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and len(parameters.get("scales", ())) == 1:
            scales[detail["name"]] = float(parameters["scales"][0])
    return scales
