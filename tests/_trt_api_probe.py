"""Run the project's TensorRT or CUDA code against the real bindings and print, as JSON, what each step did.

``python -S _trt_api_probe.py tensorrt|cuda`` with the real ``tensorrt`` (on stub libraries whose factories
return null) or the real ``cuda.bindings.runtime`` (no driver, or ``CUDA_VISIBLE_DEVICES=""``) importable.
Each step is the project's own code going as far as it can without a GPU: "ok: <value>" or
"<Exception>: <message>". Started by _trt_api.probe; the assertions are in test_trt_api.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_edge.backends.tensorrt import backend as trt_backend
from resnet_edge.backends.tensorrt import container as engine_container
from resnet_edge.backends.tensorrt import convert as trt_export
from resnet_edge.backends.tensorrt import jetson
from resnet_edge.backends.tensorrt.backend import TensorRTBackend
from resnet_edge.backends.tensorrt.cuda import GpuInfo, HostDeviceBuffer, check_cuda, cuda_runtime, gpu_info
from resnet_edge.backends.tensorrt.trtlog import import_tensorrt, make_logger
from resnet_edge.metadata import ModelMetadata
from resnet_edge.registry import BACKENDS, FORMATS
from resnet_edge.runtime import ExportJob

GPU = GpuInfo("Probe GPU", "8.9", False)


def outcome(step: Callable[[], Any]) -> str:
    try:
        return f"ok: {step()!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def engine_file(folder: Path, version: str) -> Path:
    metadata = ModelMetadata("probe", (4, 4, 3), format="trt",
                             extra={"tensorrt": {"version": version, "compute_capability": GPU.compute_capability}})
    path = folder / "probe.engine"
    path.write_bytes(engine_container.pack_engine(b"ENGINE", metadata))
    return path


def tensorrt_steps(folder: Path) -> dict[str, Callable[[], Any]]:
    sys.modules["tensorrt_libs"] = None  # type: ignore[assignment]  # the stubs, never an installed TensorRT's libraries
    trt = import_tensorrt()
    logger = make_logger(trt)

    def logger_keeps_first_error() -> list[Any]:
        logger.log(trt.ILogger.Severity.WARNING, "a warning")
        logger.log(trt.ILogger.Severity.ERROR, "first error\nits detail")
        logger.log(trt.ILogger.Severity.INTERNAL_ERROR, "second error")
        return [isinstance(logger, trt.ILogger), logger.first_error(), len(logger.errors)]

    def build() -> bytes:
        job = ExportJob(None, ModelMetadata("probe", (4, 4, 3)), folder / "out.engine", FORMATS["trt"],
                        dict(FORMATS["trt"].defaults))
        return trt_export._build_engine(trt, folder / "model.onnx", job, (1, 1, 1), GPU)

    def load(device: str) -> Any:
        trt_backend.cuda_runtime = lambda: None
        trt_backend.gpu_info = lambda runtime=None: GPU
        jetson.is_jetson = lambda *args: True
        return BACKENDS["tensorrt"].backend_class(device)(engine_file(folder, trt.__version__), device)

    return {
        "version": lambda: trt.__version__,
        "logger": logger_keeps_first_error,
        "numpy_dtypes": lambda: [trt_backend._numpy_dtype(trt, getattr(trt.DataType, name), "probe").name
                                 for name in ("FLOAT", "HALF", "INT8", "UINT8")],
        "numpy_dtype_bf16": lambda: trt_backend._numpy_dtype(trt, trt.DataType.BF16, "probe"),
        "network_flags": lambda: 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
        "build": build,
        "load": lambda: load("cuda"),
        "load_jetson": lambda: load("jetson"),
    }


def cuda_steps(folder: Path) -> dict[str, Callable[[], Any]]:
    runtime = cuda_runtime()
    trt_backend.import_tensorrt = lambda: None

    def backend(cls: type = TensorRTBackend, integrated: bool = False) -> Any:
        """A backend past ``__init__`` (which needs a GPU): the real runtime module, a stream, one buffer."""
        self = cls.__new__(cls)
        self._rt, self._stream, self._buffers = runtime, runtime.cudaStream_t(), {}
        self._capacity = self._batch = 0
        self.gpu = GpuInfo("Probe GPU", "8.7", integrated)
        self.context = self.engine = self._runtime = None
        return self

    def close(with_buffers: bool) -> None:
        self = backend()
        if with_buffers:
            self._buffers = {"input": HostDeviceBuffer(4096, 8192, 64)}
        self.close()

    kinds = runtime.cudaMemcpyKind
    return {
        "module": lambda: runtime.__name__,
        "available_devices": TensorRTBackend.available_devices,
        "gpu_info": lambda: gpu_info(runtime),
        "cudaGetDevice": lambda: check_cuda(runtime.cudaGetDevice(), "cudaGetDevice", runtime),
        "cudaGetDeviceProperties": lambda: check_cuda(runtime.cudaGetDeviceProperties(0), "cudaGetDeviceProperties",
                                                      runtime),
        "cudaStreamCreate": lambda: check_cuda(runtime.cudaStreamCreate(), "cudaStreamCreate", runtime),
        "stream_handle": lambda: int(runtime.cudaStream_t()),
        "allocate": lambda: backend()._allocate(64),
        "allocate_mapped": lambda: backend(BACKENDS["tensorrt"].backend_class("jetson"), integrated=True)._allocate(64),
        "cudaHostGetDevicePointer": lambda: check_cuda(runtime.cudaHostGetDevicePointer(4096, 0),
                                                       "cudaHostGetDevicePointer", runtime),
        "copy_to_device": lambda: backend()._copy(8192, 4096, 64, kinds.cudaMemcpyHostToDevice),
        "copy_to_host": lambda: backend()._copy(4096, 8192, 64, kinds.cudaMemcpyDeviceToHost),
        "free": lambda: HostDeviceBuffer(4096, 8192, 64).free(runtime),
        "free_mapped": lambda: HostDeviceBuffer(4096, 8192, 64, mapped=True).free(runtime),
        "close_with_buffers": lambda: close(True),
        "close": lambda: close(False),
    }


def main(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"tensorrt": tensorrt_steps, "cuda": cuda_steps}[kind](Path(tmp))
        print(json.dumps({name: outcome(step) for name, step in steps.items()}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
