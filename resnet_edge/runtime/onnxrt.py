"""ONNX Runtime on CPU, CUDA or its TensorRT provider; refuses to fall back to the CPU silently."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifact
from .._lazy import lazy_import
from .._quiet import quiet
from ..errors import DeviceError, ModelFileError, first_line
from ..metadata import check_input_shape
from ..preprocess import InputSpec
from .base import Backend, Intermediates

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt-ep": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def _ort():
    return lazy_import("onnxruntime", extra="onnxruntime")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        listed = set(_ort().get_available_providers())
        return tuple(d for d, providers in PROVIDERS.items() if providers[0] in listed)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        wanted = PROVIDERS[device]
        if wanted[0] not in ort.get_available_providers():
            raise DeviceError(
                f"this onnxruntime has no {wanted[0]} (for {device}, install resnet-edge[gpu] with CUDA/cuDNN"
                f"{' and TensorRT' if device == 'tensorrt-ep' else ''})"
            )
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as exc:
            message = first_line(exc, 200)
            if device == "cpu" or "provider" not in message.lower():
                raise ModelFileError(f"{path}: onnxruntime cannot load it ({message})") from exc
            raise DeviceError(f"onnxruntime cannot use {device}: {message}") from exc
        active = self.session.get_providers()
        if active[0] != wanted[0]:
            raise DeviceError(
                f"asked for {device} but onnxruntime runs {path.name} on {active[0]} "
                f"({wanted[0]} could not be loaded: check the CUDA/cuDNN/TensorRT libraries)"
            )
        self.metadata = artifact.read_onnx_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelFileError(f"{path}: expected one NHWC image input, found {[(i.name, i.shape) for i in inputs]}")
        model_input = inputs[0]
        self.input_name = model_input.name
        _, height, width, channels = model_input.shape
        if not all(isinstance(v, int) for v in (height, width, channels)) or channels != 3:
            raise ModelFileError(f"{path}: input {model_input.name} needs a fixed NHWC size, got {model_input.shape}")
        batch = model_input.shape[0]
        check_input_shape([batch, height, width, channels] if isinstance(batch, int) else [height, width, channels],
                          str(path), f"input {model_input.name}")
        self.fixed_batch = batch if isinstance(batch, int) else None
        dtype = ONNX_TYPES.get(model_input.type)
        if dtype is None:
            raise ModelFileError(f"{path}: unsupported input type {model_input.type}")
        quantization = self.metadata.input_quantization if self.metadata else None
        self.input_spec = InputSpec(height, width, channels, dtype, quantization)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for a batch of any size: a model exported with a fixed batch (often 1) gets it in pieces of
        that size, the last one padded with zeros and the padding's outputs dropped."""
        size = self.fixed_batch
        if size is None or len(batch) == size:
            return self._run(batch)
        pieces = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            kept = len(chunk)
            if kept < size:
                chunk = np.concatenate([chunk, np.zeros((size - kept, *chunk.shape[1:]), chunk.dtype)])
            pieces.append([output[:kept] for output in self._run(chunk)])
        return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            outputs = self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:  # onnxruntime's own exception types, one per status code
            raise ModelFileError(f"{self.path}: onnxruntime cannot run it ({first_line(exc, 200)})") from exc
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def native(self) -> Any:
        """The ``onnxruntime.InferenceSession``."""
        return self.session


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
