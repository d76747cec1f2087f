"""Strict stand-ins for TensorRT and cuda-python, shared by the behaviour tests (test_tensorrt.py) and the
check of every stand-in against the real APIs (test_trt_api.py).

Each stand-in names the real class it replaces in TENSORRT_FAKES or CUDA_FAKES. Its public attributes
(plus ``__version__`` and the dunders it defines) must exist on that real class in every checked version,
with a compatible kind (method, writable or read-only property, enum member) and positional arity.
Stand-ins are ``__slots__`` classes and enums without ``__getattr__``, so reading or writing an attribute
they lack fails. Names listed in ``_hooks`` are controls and records for the tests, not API.
"""

from __future__ import annotations

import ctypes
import enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class Fake:
    """Base of the class stand-ins: no instance ``__dict__``, no attribute fallbacks."""

    __slots__ = ()
    _hooks: ClassVar[frozenset[str]] = frozenset()


NULLPTR = "pybind11::init(): factory function returned nullptr"


# cuda-python's runtime module (cuda.bindings.runtime) ----------------------------------------------

class CudaError(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class MemcpyKind(enum.Enum):
    cudaMemcpyHostToDevice = "H2D"
    cudaMemcpyDeviceToHost = "D2H"


class FakeStream(Fake):
    """``cudaStream_t``: converts to its handle with ``int()``."""

    __slots__ = ("_handle",)

    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle


class FakeDeviceProp(Fake):
    __slots__ = ("integrated", "major", "minor", "name")

    def __init__(self, name: bytes, major: int, minor: int, integrated: int) -> None:
        self.name, self.major, self.minor, self.integrated = name, major, minor, integrated


class FakeCudart(Fake):
    """The runtime module, with host memory standing in for device memory."""

    __slots__ = ("blocks", "calls", "fail", "integrated")
    _hooks = frozenset(__slots__)
    cudaError_t = CudaError
    cudaHostAllocMapped = 2
    cudaMemcpyKind = MemcpyKind

    def __init__(self, integrated: bool = False) -> None:
        self.integrated = integrated
        self.blocks: dict[int, ctypes.Array] = {}
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def _ok(self, name: str, *values: Any) -> tuple:
        self.calls.append(name)
        if name in self.fail:
            return (CudaError.cudaErrorMemoryAllocation, *(0 for _ in values))
        return (CudaError.cudaSuccess, *values)

    def _alloc(self, name: str, nbytes: int) -> tuple:
        if name in self.fail:
            return self._ok(name, 0)
        block = (ctypes.c_uint8 * nbytes)()
        self.blocks[ctypes.addressof(block)] = block
        return self._ok(name, ctypes.addressof(block))

    def cudaGetErrorString(self, error):
        return (CudaError.cudaSuccess, b"fake failure")

    def cudaGetDeviceCount(self):
        return self._ok("cudaGetDeviceCount", 1)

    def cudaGetDevice(self):
        return self._ok("cudaGetDevice", 0)

    def cudaGetDeviceProperties(self, device):
        return self._ok("cudaGetDeviceProperties", FakeDeviceProp(b"Fake GPU\x00\x00", 8, 9, int(self.integrated)))

    def cudaMallocHost(self, size):
        return self._alloc("cudaMallocHost", size)

    def cudaMalloc(self, size):
        return self._alloc("cudaMalloc", size)

    def cudaHostAlloc(self, size, flags):
        assert flags == self.cudaHostAllocMapped
        return self._alloc("cudaHostAlloc", size)

    def cudaHostGetDevicePointer(self, pHost, flags):
        return self._ok("cudaHostGetDevicePointer", pHost)

    def cudaFree(self, devPtr):
        self.blocks.pop(devPtr)
        return self._ok("cudaFree")

    def cudaFreeHost(self, ptr):
        self.blocks.pop(ptr)
        return self._ok("cudaFreeHost")

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        ctypes.memmove(dst, src, count)
        return self._ok(f"memcpy:{kind.value}")

    def cudaStreamCreate(self):
        return self._ok("cudaStreamCreate", FakeStream(77))

    def cudaStreamSynchronize(self, stream):
        return self._ok("cudaStreamSynchronize")

    def cudaStreamDestroy(self, stream):
        return self._ok("cudaStreamDestroy")


# tensorrt: enums -------------------------------------------------------------------------------

class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.Enum):
    WORKSPACE = "WORKSPACE"


class DeviceType(enum.Enum):
    GPU = "GPU"
    DLA = "DLA"


class BuilderFlag(enum.Enum):
    GPU_FALLBACK = "GPU_FALLBACK"


class HardwareCompatibilityLevel(enum.Enum):
    NONE = "NONE"
    AMPERE_PLUS = "AMPERE_PLUS"


class TensorIOMode(enum.Enum):
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class DataType(enum.Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT8 = np.int8
    UINT8 = np.uint8
    BF16 = None


# tensorrt: runtime ------------------------------------------------------------------------------

class FakeLogger(Fake):
    __slots__ = ()
    Severity = Severity

    def __init__(self) -> None:
        pass


class FakeContext(Fake):
    """Output ``logits[n, k] = 2 * sum(image n) + k`` for k in 0..9."""

    __slots__ = ("addresses", "shapes")
    _hooks = frozenset(__slots__)

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name, shape):
        assert name == "serving_images"
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        batch = self.shapes["serving_images"][0]
        return self.shapes["serving_images"] if name == "serving_images" else (batch, 10)

    def set_tensor_address(self, name, memory):
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 77
        shape = self.shapes["serving_images"]
        images = _device_array(self.addresses["serving_images"], np.float32, shape)
        logits = _device_array(self.addresses["logits"], np.float32, (shape[0], 10))
        logits[:] = 2 * images.reshape(shape[0], -1).sum(axis=1, keepdims=True) + np.arange(10)
        return True


def _device_array(pointer: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    raw = (ctypes.c_uint8 * (count * np.dtype(dtype).itemsize)).from_address(pointer)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class FakeEngine(Fake):
    """Input ``serving_images`` (N, 4, 4, 3) float32 with profile 1..4, output ``logits`` (N, 10)."""

    __slots__ = ()
    num_io_tensors = 2
    _names = ("serving_images", "logits")

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == "serving_images" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return (-1, 4, 4, 3) if name == "serving_images" else (-1, 10)

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name, profile_index):
        return [(1, 4, 4, 3), (2, 4, 4, 3), (4, 4, 4, 3)]

    def create_execution_context(self):
        return FakeContext()


class FakeRuntime(Fake):
    __slots__ = ("DLA_core", "_logger", "_trt")

    def __init__(self, trt: FakeTensorRT, logger: Any) -> None:
        self._trt, self._logger, self.DLA_core = trt, logger, -1

    @property
    def num_DLA_cores(self) -> int:
        return self._trt.dla_cores

    def deserialize_cuda_engine(self, serialized_engine):
        if bytes(serialized_engine) != b"FAKE-ENGINE":
            self._logger.log(Severity.ERROR, "Serialization assertion failed\nmore detail")
            return None
        return FakeEngine()


# tensorrt: builder ------------------------------------------------------------------------------

class FakeTimingCache(Fake):
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def serialize(self):
        return memoryview(self._data + b"+new")


class FakeOptimizationProfile(Fake):
    __slots__ = ("shapes",)
    _hooks = frozenset(__slots__)

    def set_shape(self, input_name, low, opt, high):
        self.shapes = (input_name, low, opt, high)


class FakeBuilderConfig(Fake):
    """Keeps what the exporter sets; the defaults are TensorRT's."""

    __slots__ = ("DLA_core", "_cache", "_trt", "default_device_type", "hardware_compatibility_level")

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt, self._cache = trt, None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE

    def set_memory_pool_limit(self, pool, pool_size):
        self._trt.log["workspace"] = (pool, pool_size)

    def add_optimization_profile(self, profile):
        self._trt.log["profile"] = profile.shapes

    def set_flag(self, flag):
        self._trt.flags.append(flag)

    def create_timing_cache(self, serialized_timing_cache):
        return FakeTimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache, ignore_mismatch):
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache


class FakeTensor(Fake):
    __slots__ = ("name", "shape")

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class FakeNetwork(Fake):
    __slots__ = ("_trt",)
    num_inputs = 1

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt

    def get_input(self, index):
        return FakeTensor("input_layer_7", self._trt.input_shape)


class FakeParserError(Fake):
    __slots__ = ()

    def desc(self):
        return "Unsupported operator QLinearConv\nIn function importNode"

    def node_name(self):
        return "n7"


class FakeOnnxParser(Fake):
    __slots__ = ("_trt",)

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt

    @property
    def num_errors(self) -> int:
        return 0 if self._trt.parse_ok else 1

    def parse_from_file(self, model):
        self._trt.log["parsed"] = Path(model).read_bytes()
        return self._trt.parse_ok

    def get_error(self, index):
        return FakeParserError()


class FakeBuilder(Fake):
    __slots__ = ("_logger", "_trt")

    def __init__(self, trt: FakeTensorRT, logger: Any) -> None:
        self._trt, self._logger = trt, logger

    @property
    def num_DLA_cores(self) -> int:
        return self._trt.dla_cores

    def create_network(self, flags):
        self._trt.log["network_flags"] = flags
        return FakeNetwork(self._trt)

    def create_builder_config(self):
        config = self._trt.log["config"] = FakeBuilderConfig(self._trt)
        return config

    def create_optimization_profile(self):
        return FakeOptimizationProfile()

    def build_serialized_network(self, network, config):
        if not self._trt.build_ok:
            self._logger.log(Severity.ERROR, "Internal Error (could not find any implementation)")
            return None
        return memoryview(b"BUILT-ENGINE")


# tensorrt: the module ---------------------------------------------------------------------------

class FakeTensorRT(Fake):
    """The ``tensorrt`` module: Builder and OnnxParser for the exporter, Runtime for the backend.

    ``null_factories`` makes the constructors fail the way the real bindings do when TensorRT returns null.
    """

    __slots__ = ("build_ok", "dla_cores", "flags", "input_shape", "log", "null_factories", "parse_ok", "runtimes")
    _hooks = frozenset(__slots__)
    __version__ = "10.8.0"
    ILogger = FakeLogger
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    MemoryPoolType = MemoryPoolType
    DeviceType = DeviceType
    BuilderFlag = BuilderFlag
    HardwareCompatibilityLevel = HardwareCompatibilityLevel
    TensorIOMode = TensorIOMode
    DataType = DataType

    def __init__(self, dla_cores: int = 0, parse_ok: bool = True, build_ok: bool = True,
                 input_shape: tuple[int, ...] = (-1, 4, 4, 3), null_factories: bool = False) -> None:
        self.dla_cores, self.parse_ok, self.build_ok = dla_cores, parse_ok, build_ok
        self.input_shape, self.null_factories = input_shape, null_factories
        self.log: dict[str, Any] = {}
        self.flags: list[BuilderFlag] = []
        self.runtimes: list[FakeRuntime] = []

    def _check_factory(self) -> None:
        if self.null_factories:
            raise TypeError(NULLPTR)

    def Builder(self, logger):
        self._check_factory()
        return FakeBuilder(self, logger)

    def OnnxParser(self, network, logger):
        self._check_factory()
        return FakeOnnxParser(self)

    def Runtime(self, logger):
        self._check_factory()
        runtime = FakeRuntime(self, logger)
        self.runtimes.append(runtime)
        return runtime

    def nptype(self, trt_type):
        if trt_type.value is None:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return trt_type.value


TENSORRT_FAKES: dict[type, str] = {
    FakeTensorRT: "",
    FakeLogger: "ILogger",
    Severity: "ILogger.Severity",
    NetworkDefinitionCreationFlag: "NetworkDefinitionCreationFlag",
    MemoryPoolType: "MemoryPoolType",
    DeviceType: "DeviceType",
    BuilderFlag: "BuilderFlag",
    HardwareCompatibilityLevel: "HardwareCompatibilityLevel",
    TensorIOMode: "TensorIOMode",
    DataType: "DataType",
    FakeBuilder: "Builder",
    FakeNetwork: "INetworkDefinition",
    FakeTensor: "ITensor",
    FakeBuilderConfig: "IBuilderConfig",
    FakeOptimizationProfile: "IOptimizationProfile",
    FakeTimingCache: "ITimingCache",
    FakeOnnxParser: "OnnxParser",
    FakeParserError: "ParserError",
    FakeRuntime: "Runtime",
    FakeEngine: "ICudaEngine",
    FakeContext: "IExecutionContext",
}
"""Every TensorRT stand-in and the real class (path in the ``tensorrt`` module, "" for the module) it replaces."""

CUDA_FAKES: dict[type, str] = {
    FakeCudart: "",
    CudaError: "cudaError_t",
    MemcpyKind: "cudaMemcpyKind",
    FakeStream: "cudaStream_t",
    FakeDeviceProp: "cudaDeviceProp",
}
"""Every cuda-python stand-in and the real class in ``cuda.bindings.runtime`` it replaces."""
