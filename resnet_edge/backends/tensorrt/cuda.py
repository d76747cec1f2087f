"""CUDA through cuda-python: the runtime module, checked calls, the current GPU, and host/device buffers.

Every CUDA call's status goes through :func:`check_cuda`, so a failure is a one-line DeviceError.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ...errors import DeviceError, MissingDependencyError, first_line


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    try:
        return lazy_import("cuda.bindings.runtime", extra="tensorrt")
    except MissingDependencyError:
        return lazy_import("cuda.cudart", extra="tensorrt")


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


def allocate_copied(runtime: ModuleType, nbytes: int) -> HostDeviceBuffer:
    """Pinned host memory plus device memory, copied explicitly each run (any GPU)."""
    host = check_cuda(runtime.cudaMallocHost(nbytes), "cudaMallocHost", runtime)
    try:
        device = check_cuda(runtime.cudaMalloc(nbytes), "cudaMalloc", runtime)
    except DeviceError:
        check_cuda(runtime.cudaFreeHost(host), "cudaFreeHost", runtime)
        raise
    return HostDeviceBuffer(int(host), int(device), nbytes)


def allocate_mapped(runtime: ModuleType, nbytes: int) -> HostDeviceBuffer:
    """Pinned host memory mapped into the GPU's address space (zero copy: worth it on an integrated GPU)."""
    host = check_cuda(runtime.cudaHostAlloc(nbytes, runtime.cudaHostAllocMapped), "cudaHostAlloc", runtime)
    try:
        device = check_cuda(runtime.cudaHostGetDevicePointer(host, 0), "cudaHostGetDevicePointer", runtime)
    except DeviceError:
        check_cuda(runtime.cudaFreeHost(host), "cudaFreeHost", runtime)
        raise
    return HostDeviceBuffer(int(host), int(device), nbytes, mapped=True)
