"""TensorRT engines on an NVIDIA GPU or Jetson, one job per module:

- :mod:`.backend`: ``TensorRTBackend``, the one ``tensorrt`` backend (devices "jetson", then "cuda").
- :mod:`.jetson`: device "jetson": ``is_jetson`` and ``JetsonBackend`` (DLA core, zero-copy buffers).
- :mod:`.compat`: which engines this TensorRT and GPU may load, and which batch sizes they take.
- :mod:`.cuda`: cuda-python: the runtime module, checked calls, the current GPU, host/device buffers.
- :mod:`.trtlog`: TensorRT itself: the lazy import, the error-keeping logger, its factories.

The names below are re-exported for convenience; to replace one in a test, patch the module that looks it up
(``backend.cuda_runtime``, ``backend.import_tensorrt``, ``jetson.is_jetson``), not this package.
"""

from __future__ import annotations

from .backend import INPUT_DTYPES, TensorRTBackend
from .compat import HARDWARE_COMPATIBILITY_MIN_CC, check_batch, check_engine_compatibility, engine_info
from .cuda import GpuInfo, HostDeviceBuffer, allocate_copied, allocate_mapped, check_cuda, cuda_runtime, gpu_info
from .jetson import JetsonBackend, is_jetson
from .trtlog import create, import_tensorrt, make_logger

__all__ = [
    "HARDWARE_COMPATIBILITY_MIN_CC",
    "INPUT_DTYPES",
    "GpuInfo",
    "HostDeviceBuffer",
    "JetsonBackend",
    "TensorRTBackend",
    "allocate_copied",
    "allocate_mapped",
    "check_batch",
    "check_cuda",
    "check_engine_compatibility",
    "create",
    "cuda_runtime",
    "engine_info",
    "gpu_info",
    "import_tensorrt",
    "is_jetson",
    "make_logger",
]
