"""ONNX Runtime on CPU, CUDA or its TensorRT provider; refuses to fall back to the CPU silently."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ...errors import DeviceError, ModelFileError, first_line
from ...metadata import check_input_shape
from ...preprocess import InputSpec
from ...runtime import Backend
from .container import read_onnx_props


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """onnxruntime's Python wrapper ``print()``s a provider that fails to load ("EP Error ... Falling back") to
    stdout, where it would corrupt ``--json`` output: it goes to stderr instead."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


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
            with stdout_to_stderr():  # a provider that fails to load is print()ed: --json keeps stdout clean
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
        self.metadata = read_onnx_props(self.session.get_modelmeta().custom_metadata_map, str(path))
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
