"""TensorRTBackend: one deserialized engine, one execution context and one CUDA stream.

Uses only the TensorRT 10/11 name-based API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). An engine built by another TensorRT version or for
another GPU is refused before TensorRT sees it, with a message saying what it was built for.

The one TensorRT backend runs on two devices: ``"jetson"`` (DLA cores, zero-copy buffers: the subclass in
:mod:`.jetson`, which the registry row names for that device) and ``"cuda"`` (any NVIDIA GPU).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import DataError, DeviceError, ModelFileError
from ...metadata import check_input_shape
from ...preprocess import InputSpec, dequantize
from ...runtime import Backend
from .compat import check_batch, check_engine_compatibility, engine_info
from .container import unpack_engine
from .cuda import HostDeviceBuffer, allocate_copied, check_cuda, cuda_runtime, gpu_info
from .trtlog import create, import_tensorrt, make_logger

INPUT_DTYPES = ("float32", "float16", "int8", "uint8")


def _numpy_dtype(trt: ModuleType, dtype: Any, source: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:
        raise ModelFileError(f"{source}: tensor type {dtype} has no numpy equivalent") from exc


class TensorRTBackend(Backend):
    """A deserialized engine, one execution context and one CUDA stream."""

    name = "tensorrt"
    devices = ("jetson", "cuda")
    thread_safe = False

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        """``devices`` this machine has: a CUDA device with TensorRT and cuda-python importable, ``"jetson"`` only
        on a Jetson. Cheap checks only; never raises."""
        from ... import machine

        try:
            import_tensorrt()
            runtime = cuda_runtime()
            status, count = runtime.cudaGetDeviceCount()
            if status != runtime.cudaError_t.cudaSuccess or count < 1:
                return ()
            on_jetson = machine.is_jetson()
        except Exception:
            return ()
        return tuple(device for device in cls.devices if device != "jetson" or on_jetson)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        self._buffers: dict[str, HostDeviceBuffer] = {}
        self._capacity = 0
        self._batch = 0
        self._stream: Any = None
        self.context: Any = None
        self.engine: Any = None
        self._runtime: Any = None
        source = str(path)
        self.metadata, engine_bytes = unpack_engine(path.read_bytes(), source)
        trt = self._trt = import_tensorrt()
        self._rt = cuda_runtime()
        self.gpu = gpu_info(self._rt)
        check_engine_compatibility(self.metadata, trt.__version__, self.gpu.compute_capability, source)
        self._logger = make_logger(trt)
        self._runtime = create(self._logger, trt.Runtime, self._logger)
        self._configure_runtime(self._runtime)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ModelFileError(f"{source}: TensorRT cannot load the engine ({self._logger.first_error()})")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise DeviceError(f"{source}: TensorRT cannot create an execution context "
                              f"({self._logger.first_error('out of GPU memory?')})")
        self._read_io(source)
        self._stream = check_cuda(self._rt.cudaStreamCreate(), "cudaStreamCreate", self._rt)

    def _configure_runtime(self, runtime: Any) -> None:
        """Hook before deserializing; a DLA engine needs device "jetson"."""
        dla_core = engine_info(self.metadata).get("dla_core")
        if dla_core is not None:
            raise DeviceError(f"{self.path.name} was built for DLA core {dla_core}: load it with device='jetson'")

    def _read_io(self, source: str) -> None:
        trt, engine = self._trt, self.engine
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(f"{source}: expected one input and at least one output, got inputs {inputs}")
        self.input_name = inputs[0]
        self.output_names = outputs
        shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or min(shape[1:]) < 1:
            raise ModelFileError(f"{source}: input {self.input_name} must be NHWC with a fixed size, got {shape}")
        check_input_shape(shape[1:], source, f"input {self.input_name}")  # before any buffer is allocated
        dtype = _numpy_dtype(trt, engine.get_tensor_dtype(self.input_name), source)
        if dtype.name not in INPUT_DTYPES:
            raise ModelFileError(f"{source}: unsupported input type {dtype.name}")
        _, height, width, channels = shape
        quantization = self.metadata.input_quantization if self.metadata else None
        self.input_spec = InputSpec(height, width, channels, dtype.name, quantization)
        if shape[0] >= 1:
            self.profile = (shape[0],) * 3
        else:
            low, opt, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile = (int(low[0]), int(opt[0]), int(high[0]))
        self._dtypes = {name: _numpy_dtype(trt, engine.get_tensor_dtype(name), source) for name in inputs + outputs}
        self._output_quantization = self.metadata.output_quantization if self.metadata else None

    def _allocate(self, nbytes: int) -> HostDeviceBuffer:
        """Allocation hook: pinned host memory plus device memory, copied explicitly each run."""
        return allocate_copied(self._rt, nbytes)

    def _input_shape(self, batch: int) -> tuple[int, int, int, int]:
        spec = self.input_spec
        return batch, spec.height, spec.width, spec.channels

    def _set_batch(self, batch: int) -> None:
        if not self.context.set_input_shape(self.input_name, self._input_shape(batch)):
            raise DataError(f"{self.path.name}: TensorRT rejected input shape {self._input_shape(batch)} "
                            f"({self._logger.first_error()})")
        self._batch = batch

    def _reallocate(self, batch: int) -> None:
        """Buffers for ``batch`` images: freed and allocated again whenever the batch grows."""
        self._free_buffers()
        self._set_batch(batch)
        for name in [self.input_name, *self.output_names]:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize)
            buffer = self._buffers[name] = self._allocate(nbytes)
            if not self.context.set_tensor_address(name, buffer.device):
                raise DeviceError(f"{self.path.name}: TensorRT rejected the address of tensor {name}")
        self._capacity = batch

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        runtime = self._rt
        check_cuda(runtime.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync", runtime)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        size = len(batch)
        check_batch(size, self.profile, self.path.name)
        if size > self._capacity:
            self._reallocate(size)
        elif size != self._batch:
            self._set_batch(size)
        runtime, kinds = self._rt, self._rt.cudaMemcpyKind
        source = self._buffers[self.input_name]
        staged = source.view(self._dtypes[self.input_name], self._input_shape(size))
        np.copyto(staged, batch, casting="same_kind")
        if not source.mapped:
            self._copy(source.device, source.host, staged.nbytes, kinds.cudaMemcpyHostToDevice)
        if not self.context.execute_async_v3(int(self._stream)):
            raise DeviceError(f"{self.path.name}: TensorRT execution failed ({self._logger.first_error()})")
        results = []
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            buffer = self._buffers[name]
            view = buffer.view(self._dtypes[name], shape)
            if not buffer.mapped:
                self._copy(buffer.host, buffer.device, view.nbytes, kinds.cudaMemcpyDeviceToHost)
            results.append((name, view))
        check_cuda(runtime.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", runtime)
        outputs = []
        for _, view in results:
            quantization = self._output_quantization if view.dtype.kind in "iu" else None
            outputs.append(np.array(dequantize(view, quantization), dtype=np.float32, copy=True))
        return outputs

    def _free_buffers(self) -> None:
        buffers, self._buffers = self._buffers, {}
        self._capacity = self._batch = 0
        if buffers and self._stream is not None:
            check_cuda(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", self._rt)
        for buffer in buffers.values():
            buffer.free(self._rt)

    def close(self) -> None:
        """Free buffers and stream, then drop context, engine and runtime (in that order)."""
        try:
            if getattr(self, "_rt", None) is not None:
                self._free_buffers()
                if self._stream is not None:
                    stream, self._stream = self._stream, None
                    check_cuda(self._rt.cudaStreamDestroy(stream), "cudaStreamDestroy", self._rt)
        finally:
            self.context = self.engine = self._runtime = None
