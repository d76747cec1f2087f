"""ONNX Runtime's hooks for the int8 tools: every intermediate tensor readable (the layer-wise diagnosis), and the
activation scales of a Q/DQ file (``--calib-report``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...errors import ModelFileError, first_line
from ...runtime import Intermediates


def _ort():
    return lazy_import("onnxruntime", extra="onnxruntime")


_QDQ_SUFFIX = re.compile(r"(_QuantizeLinear_Output|_DequantizeLinear_Output|_QuantizeLinear_Input)(_\d+)?$")
_GENERATED = re.compile(r"__\d+(:\d+)?$")  # tf2onnx's helper tensors (a layer's input in another layout)


def intermediates(path: Path) -> Intermediates:
    """Every float tensor downstream of the input as an extra output of an unoptimized CPU session.

    Unoptimized, so each Q/DQ pair stays in place: the simulated int8 values, equal to ORT's fused
    kernels up to rounding.
    """
    onnx = lazy_import("onnx", extra="export")
    ort = _ort()
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelFileError(f"{path}: expected one image input, found {len(inputs)}")
    live = {inputs[0].name}
    tensors: list[tuple[str, str]] = []
    for node in graph.node:
        if not any(name in live for name in node.input):
            continue
        live.update(node.output)
        if node.op_type != "QuantizeLinear":
            tensors += [(t, _QDQ_SUFFIX.sub("", t)) for t in node.output if not _GENERATED.search(_QDQ_SUFFIX.sub("", t))]
    graph_outputs = [o.name for o in graph.output]
    graph.output.extend(onnx.ValueInfoProto(name=t) for t, _ in tensors if t not in graph_outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        with quiet():
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelFileError(f"{path}: onnxruntime cannot load it ({first_line(exc, 200)})") from exc
    (model_input,) = session.get_inputs()
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(model_input.type, np.float32)
    floating = {o.name for o in session.get_outputs() if o.type in ("tensor(float)", "tensor(float16)", "tensor(double)")}

    def run(batch: np.ndarray, ids: Sequence[str]) -> dict[str, np.ndarray]:
        wanted = [i for i in ids if i in floating]
        values = session.run(wanted, {model_input.name: batch.astype(dtype)})
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(wanted, values, strict=True)}

    batch_dim = model_input.shape[0] if model_input.shape else None
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in model_input.shape[1:])
    output = graph_outputs[0] if len(graph_outputs) == 1 else None
    return Intermediates([t for t in tensors if t[0] in floating], output, shape,
                         batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None, run)


def activation_scales(path: Path) -> dict[str, float]:
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
