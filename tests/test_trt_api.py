"""The TensorRT and CUDA code against the real APIs: TensorRT 11 and 10 (JetPack 6), and cuda-python.

The real bindings come from PyPI and import here on stub libraries (see _trt_api.py). Their API surface
is compared with every stand-in of _trt_fakes.py (the stand-ins test_tensorrt.py runs the project's code
through), and the project's code runs against them as far as it can without TensorRT's libraries or a CUDA
driver. Skipped without a C compiler or when the wheels cannot be fetched; ``RESNET_EDGE_TRT_API=require``
turns those skips into failures.
"""

from __future__ import annotations

import enum
import inspect
import os
import re
from typing import Any

import _trt_api as api
import _trt_fakes as fakes
import pytest
from _trt_fakes import CUDA_FAKES, TENSORRT_FAKES, Fake

pytestmark = pytest.mark.trt_api


def real(factory: Any, *args: Any) -> Any:
    try:
        return factory(*args)
    except api.Unavailable as exc:
        if os.environ.get("RESNET_EDGE_TRT_API") == "require":
            pytest.fail(f"the real TensorRT/CUDA API is required: {exc}")
        pytest.skip(f"real TensorRT/CUDA API not available: {exc}")


@pytest.fixture(scope="session", params=api.TENSORRT)
def tensorrt(request) -> api.Bindings:
    return real(api.tensorrt, request.param)


@pytest.fixture(scope="session", params=api.CUDA, ids=lambda target: f"{target[0]}-{target[1]}")
def cuda(request) -> api.Bindings:
    return real(api.cuda, *request.param)


@pytest.fixture(scope="session")
def tensorrt_probe(tensorrt) -> dict[str, str]:
    return api.probe(tensorrt, "tensorrt")


@pytest.fixture(scope="session")
def cuda_probe(cuda) -> dict[str, str]:
    return api.probe(cuda, "cuda")


# the real bindings are the real ones -----------------------------------------------------------

def test_tensorrt_surface_is_the_real_api(tensorrt):
    surface = api.surface(tensorrt)
    major = int(tensorrt.version.split(".")[0])
    flags = set(surface.members("BuilderFlag"))
    assert {"GPU_FALLBACK", "TF32"} <= flags
    if major == 11:
        assert not flags & {"FP16", "INT8"} and not surface.has("", "IInt8EntropyCalibrator2"), "weak typing is gone"
    else:
        assert {"FP16", "INT8"} <= flags and surface.has("", "IInt8EntropyCalibrator2")
    assert "STRONGLY_TYPED" in surface.members("NetworkDefinitionCreationFlag")
    assert {"execute_async_v3", "set_tensor_address", "set_input_shape"} <= set(surface.types["IExecutionContext"]["attrs"])
    assert not surface.has("IExecutionContext", "execute_async_v2")
    assert surface.types["Builder"]["attrs"]["num_DLA_cores"] == "readonly"
    assert {"__len__", "__getitem__"} <= set(surface.types["Dims"]["attrs"]), "shapes are read as int sequences"


def test_cuda_surface_is_the_real_api(cuda):
    surface = api.surface(cuda)
    assert surface.members("cudaError_t")[0] == "cudaSuccess"
    assert {"cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"} <= set(surface.members("cudaMemcpyKind"))
    assert surface.types[""]["signatures"]["cudaMemcpyAsync"] == [[5, 5]]


# every stand-in is strict, and claims no more than the real API offers ----------------------------

def stand_ins() -> list[type]:
    return [value for value in vars(fakes).values() if inspect.isclass(value) and value.__module__ == fakes.__name__
            and value is not Fake and issubclass(value, (Fake, enum.Enum))]


def test_every_stand_in_names_its_real_class():
    assert set(stand_ins()) == set(TENSORRT_FAKES) | set(CUDA_FAKES)


@pytest.mark.parametrize("cls", [c for c in stand_ins() if issubclass(c, Fake)], ids=lambda cls: cls.__name__)
def test_stand_ins_are_strict(cls):
    below_fake = cls.__mro__[: cls.__mro__.index(Fake)]
    assert all("__slots__" in vars(c) for c in below_fake), "an instance __dict__ would accept any attribute"
    assert not any(name in vars(c) for c in below_fake for name in ("__getattr__", "__getattribute__", "__setattr__"))
    assert set(cls._hooks) <= set(dir(cls))


def test_tensorrt_stand_ins_match_the_real_api(tensorrt):
    surface = api.surface(tensorrt)
    problems = [p for fake, path in TENSORRT_FAKES.items() for p in api.mismatches(fake, path, surface, TENSORRT_FAKES)]
    assert problems == [], "\n".join(problems)


def test_cuda_stand_ins_match_the_real_api(cuda):
    surface = api.surface(cuda)
    problems = [p for fake, path in CUDA_FAKES.items() for p in api.mismatches(fake, path, surface, CUDA_FAKES)]
    assert problems == [], "\n".join(problems)


class StaleContext(Fake):
    """What a stand-in written for TensorRT 8 might claim."""

    __slots__ = ("num_DLA_cores",)

    def execute_async_v2(self, bindings, stream_handle):
        return True

    def set_input_shape(self, name):
        return True

    def get_tensor_shape(self, name):
        return ()


class WeakFlags(enum.Enum):
    GPU_FALLBACK = 1
    FP16 = 2


def test_comparison_flags_what_the_real_api_lacks(tensorrt):
    surface = api.surface(tensorrt)
    stale = api.mismatches(StaleContext, "IExecutionContext", surface, {})
    assert [p.split(": ", 1)[1] for p in stale] == [
        "no attribute execute_async_v2",
        "no attribute num_DLA_cores",
        "set_input_shape takes 1..1 positional arguments, the real one 2..2",
    ]
    read_only = api.mismatches(StaleContext, "Builder", surface, {})
    assert any(p.endswith("num_DLA_cores is a property here, a readonly there") for p in read_only)
    weak = api.mismatches(WeakFlags, "BuilderFlag", surface, {})
    assert weak == ([] if tensorrt.version.startswith("10.") else [f"WeakFlags (BuilderFlag) on {surface.label}: no member FP16"])
    assert api.mismatches(WeakFlags, "NoSuchEnum", surface, {}) == [f"WeakFlags (NoSuchEnum) on {surface.label}: no such class"]


# the project's code on the real bindings -----------------------------------------------------------

def test_tensorrt_code_runs_on_the_real_bindings(tensorrt, tensorrt_probe):
    cannot = "DeviceError: TensorRT cannot create its {} (it logged no reason; is the NVIDIA driver working?)"
    assert tensorrt_probe == {
        "version": f"ok: {tensorrt.version!r}",
        "logger": "ok: [True, 'first error', 2]",
        "numpy_dtypes": "ok: ['float32', 'float16', 'int8', 'uint8']",
        "numpy_dtype_bf16": "ModelFileError: probe: tensor type DataType.BF16 has no numpy equivalent",
        "network_flags": tensorrt_probe["network_flags"],
        "build": cannot.format("Builder"),
        "load": cannot.format("Runtime"),
        "load_jetson": cannot.format("Runtime"),
    }
    assert re.fullmatch(r"ok: [1-9]\d*", tensorrt_probe["network_flags"])


CUDA_CALLS = {
    "cudaGetDevice": "cudaGetDevice", "cudaGetDeviceProperties": "cudaGetDeviceProperties",
    "cudaStreamCreate": "cudaStreamCreate", "allocate": "cudaMallocHost", "allocate_mapped": "cudaHostAlloc",
    "cudaHostGetDevicePointer": "cudaHostGetDevicePointer", "copy_to_device": "cudaMemcpyAsync",
    "copy_to_host": "cudaMemcpyAsync", "free": "cudaFree", "free_mapped": "cudaFreeHost",
    "close_with_buffers": "cudaStreamSynchronize", "close": "cudaStreamDestroy",
}
"""Probe step -> the CUDA call it reaches. Without a GPU each is a one-line DeviceError naming the call; cuda-python
before the cuda-bindings split (12.6.x, both ``cuda.cudart`` and its ``cuda.bindings.runtime``) raises RuntimeError
while loading the driver instead, after it has converted the arguments."""


def test_cuda_code_runs_on_the_real_bindings(cuda, cuda_probe):
    assert cuda_probe.pop("module") == f"ok: {cuda.module!r}"
    assert cuda_probe.pop("available_devices") == "ok: ()"
    assert cuda_probe.pop("stream_handle") == "ok: 0"
    assert re.fullmatch(r"DeviceError: CUDA device query (\(is an NVIDIA driver installed\?\) )?failed: .+",
                        cuda_probe.pop("gpu_info"))
    driverless = r"|RuntimeError: .+" if cuda.package == "cuda-python" else ""
    unexpected = {step: outcome for step, outcome in cuda_probe.items()
                  if not re.fullmatch(rf"DeviceError: CUDA {CUDA_CALLS[step]} failed: cudaError\w+ \(.+\){driverless}",
                                      outcome)}
    assert unexpected == {}
    assert set(cuda_probe) == set(CUDA_CALLS)
