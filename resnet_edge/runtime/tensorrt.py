"""TensorRT engines on an NVIDIA GPU: tensors by name, CUDA memory through cuda-python.

Uses only the TensorRT 10/11 name-based API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). Every CUDA call's status is checked and a failure is a
one-line DeviceError. An engine built by another TensorRT version or for another GPU is refused
before TensorRT sees it, with a message saying what it was built for.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import artifact
from .._lazy import lazy_import
from ..errors import DataError, DeviceError, MissingDependencyError, ModelFileError
from ..metadata import ModelMetadata
from ..preprocess import InputSpec, dequantize
from .base import Backend

INPUT_DTYPES = ("float32", "float16", "int8", "uint8")
HARDWARE_COMPATIBILITY_MIN_CC = (8, 0)
_log = logging.getLogger("resnet_edge.tensorrt")


def import_tensorrt() -> ModuleType:
    return lazy_import("tensorrt", extra="trt")


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    try:
        return lazy_import("cuda.bindings.runtime", extra="trt")
    except MissingDependencyError:
        return lazy_import("cuda.cudart", extra="trt")


def check_cuda(result: Any, what: str, runtime: ModuleType | None = None) -> Any:
    """Unwrap cuda-python's ``(status, *values)`` tuple; a status other than success is a DeviceError.

    Returns None, the single value, or the tuple of values.
    """
    runtime = runtime or cuda_runtime()
    status, values = (result[0], tuple(result[1:])) if isinstance(result, tuple) else (result, ())
    if status != runtime.cudaError_t.cudaSuccess:
        name = getattr(status, "name", str(status))
        try:
            text = runtime.cudaGetErrorString(status)[1]
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        except Exception:
            text = ""
        raise DeviceError(f"CUDA {what} failed: {name}{f' ({text})' if text else ''}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class GpuInfo:
    """The current CUDA device as an engine cares about it."""

    name: str
    compute_capability: str
    integrated: bool


def gpu_info(runtime: ModuleType | None = None) -> GpuInfo:
    """Name, compute capability ("8.9") and integrated-ness (Jetson) of the current CUDA device.

    Shared by the exporter (recorded in the engine's metadata) and the runtime (checked against it).
    """
    runtime = runtime or cuda_runtime()
    try:
        result = runtime.cudaGetDeviceCount()
    except RuntimeError as exc:  # cuda-python before 12.6 (cuda.cudart) raises when it finds no driver
        raise DeviceError(f"CUDA device query failed: {first_line(str(exc))} (is an NVIDIA driver installed?)") from None
    count = check_cuda(result, "device query (is an NVIDIA driver installed?)", runtime)
    if not count:
        raise DeviceError("no CUDA device found")
    device = check_cuda(runtime.cudaGetDevice(), "cudaGetDevice", runtime)
    props = check_cuda(runtime.cudaGetDeviceProperties(device), "cudaGetDeviceProperties", runtime)
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode(errors="replace")
    return GpuInfo(str(name).strip(), f"{int(props.major)}.{int(props.minor)}", bool(props.integrated))


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _capability(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".")[:2] if p.isdigit())


def engine_info(metadata: ModelMetadata | None) -> dict[str, Any]:
    """The ``extra["tensorrt"]`` block of an engine's metadata ({} for a plain engine)."""
    if metadata is None:
        return {}
    info = metadata.extra.get("tensorrt")
    return dict(info) if isinstance(info, dict) else {}


def check_engine_compatibility(
    metadata: ModelMetadata | None, trt_version: str, compute_capability: str, source: str = "engine"
) -> None:
    """Refuse an engine built by another TensorRT major.minor or for another GPU generation.

    Pure function of the metadata and the current versions, so it runs without TensorRT or a GPU.
    An engine without metadata cannot be checked and is left to TensorRT.
    """
    info = engine_info(metadata)
    built_version = info.get("version")
    if built_version and _major_minor(built_version) != _major_minor(trt_version):
        raise ModelFileError(
            f"{source}: engine was built with TensorRT {built_version}, this is TensorRT {trt_version}; "
            "rebuild it here (engines are tied to the TensorRT version)"
        )
    built_cc = info.get("compute_capability")
    if not built_cc or _capability(built_cc) == _capability(compute_capability):
        return
    gpu = info.get("gpu") or "another GPU"
    if info.get("hardware_compatibility"):
        if _capability(compute_capability) >= HARDWARE_COMPATIBILITY_MIN_CC:
            return
        raise ModelFileError(
            f"{source}: engine was built for Ampere or newer GPUs (hardware compatibility), this GPU has "
            f"compute capability {compute_capability}; rebuild it here"
        )
    raise ModelFileError(
        f"{source}: engine was built for {gpu} (compute capability {built_cc}), this GPU has compute "
        f"capability {compute_capability}; rebuild it here, or export with hardware compatibility"
    )


def check_batch(batch: int, profile: Sequence[int], source: str = "engine") -> None:
    """A batch size outside the engine's optimization profile is a DataError naming the profile."""
    low, opt, high = profile
    if not low <= batch <= high:
        raise DataError(
            f"{source}: batch of {batch} is outside the engine's optimization profile "
            f"(min {low}, opt {opt}, max {high}); split the batch or rebuild with --batch MIN,OPT,MAX"
        )


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps error messages (for one-line exceptions) and forwards the rest."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            levels = trt.ILogger.Severity
            if severity in (levels.INTERNAL_ERROR, levels.ERROR):
                self.errors.append(str(msg))
                _log.error(msg)
            elif severity == levels.WARNING:
                _log.warning(msg)
            else:
                _log.debug(msg)

        def first_error(self, default: str = "no reason given") -> str:
            return first_line(self.errors[0]) if self.errors else default

    return CollectingLogger()


def create(logger: Any, factory: Any, *args: Any) -> Any:
    """``factory(*args)`` for ``trt.Builder``, ``trt.OnnxParser`` or ``trt.Runtime``, as a one-line DeviceError when
    TensorRT cannot start (CUDA or library trouble): it then returns null, which its bindings raise as a TypeError.
    """
    try:
        return factory(*args)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        reason = logger.first_error("it logged no reason; is the NVIDIA driver working?")
        raise DeviceError(f"TensorRT cannot create its {factory.__name__} ({reason})") from None


def first_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


@dataclass
class HostDeviceBuffer:
    """Page-locked host memory and the device address TensorRT reads or writes.

    ``mapped`` buffers are host memory the GPU addresses directly (zero copy): no memcpy is issued.
    """

    host: int
    device: int
    nbytes: int
    mapped: bool = False

    def view(self, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
        """A numpy array over the first ``prod(shape)`` elements of the host memory (no copy)."""
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.host)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(shape))

    def free(self, runtime: ModuleType) -> None:
        if not self.mapped and self.device:
            check_cuda(runtime.cudaFree(self.device), "cudaFree", runtime)
        if self.host:
            check_cuda(runtime.cudaFreeHost(self.host), "cudaFreeHost", runtime)
        self.host = self.device = 0


def _numpy_dtype(trt: ModuleType, dtype: Any, source: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:
        raise ModelFileError(f"{source}: tensor type {dtype} has no numpy equivalent") from exc


class TensorRTBackend(Backend):
    """A deserialized engine, one execution context and one CUDA stream."""

    name = "tensorrt"
    devices = ("cuda",)
    thread_safe = False

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        """``devices`` when TensorRT and cuda-python import and a CUDA device is present; never raises."""
        try:
            import_tensorrt()
            runtime = cuda_runtime()
            status, count = runtime.cudaGetDeviceCount()
            if status != runtime.cudaError_t.cudaSuccess or count < 1:
                return ()
        except Exception:
            return ()
        return cls.devices

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
        self.metadata, engine_bytes = artifact.unpack_engine(path.read_bytes(), source)
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
        """Hook before deserializing; a DLA engine belongs to the Jetson backend."""
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
        runtime = self._rt
        host = check_cuda(runtime.cudaMallocHost(nbytes), "cudaMallocHost", runtime)
        try:
            device = check_cuda(runtime.cudaMalloc(nbytes), "cudaMalloc", runtime)
        except DeviceError:
            check_cuda(runtime.cudaFreeHost(host), "cudaFreeHost", runtime)
            raise
        return HostDeviceBuffer(int(host), int(device), nbytes)

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
