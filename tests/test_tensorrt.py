"""TensorRT export and runtime: pure parts on CPU, the rest through the strict TensorRT/CUDA stand-ins of
_trt_fakes.py (checked against the real APIs by test_trt_api.py), and real engines under ``-m tensorrt`` where
TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _trt_fakes import (
    NULLPTR,
    BuilderFlag,
    CudaError,
    DeviceType,
    FakeCudart,
    FakeOnnxParser,
    FakeTensorRT,
    HardwareCompatibilityLevel,
    MemoryPoolType,
    Severity,
)

from resnet_edge import artifact, machine
from resnet_edge.backends.tensorrt import backend as backend_module
from resnet_edge.backends.tensorrt import container as engine_container
from resnet_edge.backends.tensorrt import convert as trt_export
from resnet_edge.backends.tensorrt import jetson as jetson_module
from resnet_edge.backends.tensorrt.backend import TensorRTBackend
from resnet_edge.backends.tensorrt.compat import check_batch, check_engine_compatibility
from resnet_edge.backends.tensorrt.convert import (
    first_parser_error,
    parse_profile,
    profile_shapes,
    validate_options,
)
from resnet_edge.backends.tensorrt.cuda import GpuInfo, check_cuda, gpu_info
from resnet_edge.backends.tensorrt.jetson import is_jetson
from resnet_edge.backends.tensorrt.trtlog import create, make_logger
from resnet_edge.errors import (
    DataError,
    DeviceError,
    ExportError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelFileError,
)
from resnet_edge.metadata import ModelMetadata, Quantization
from resnet_edge.predictor import load
from resnet_edge.preprocess import InputSpec
from resnet_edge.registry import BACKENDS, FORMATS
from resnet_edge.runtime import ExportJob

TRT_DEFAULTS = dict(FORMATS["trt"].defaults)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def trt_metadata(**tensorrt: object) -> ModelMetadata:
    info = {"version": "10.8.0", "gpu": "NVIDIA L4", "compute_capability": "8.9", "precision": "fp16",
            "profile": [1, 4, 8], "dla_core": None, "hardware_compatibility": False, **tensorrt}
    return ModelMetadata("tiny", (4, 4, 3), labels=tuple("abcdefghij"), format="trt", precision="fp16",
                         extra={"tensorrt": info})


# parse_profile / profile_shapes -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("batch", "expected"),
    [("1,4,8", (1, 4, 8)), (" 1, 2 ,3 ", (1, 2, 3)), ("4", (4, 4, 4)), (4, (4, 4, 4)), ([2, 2, 16], (2, 2, 16)),
     ("1,1,1", (1, 1, 1))],
)
def test_parse_profile_valid(batch, expected):
    assert parse_profile(batch) == expected


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("1,2", "takes N or MIN,OPT,MAX"),
        ("1,2,3,4", "takes N or MIN,OPT,MAX"),
        ("1,,3", "takes N or MIN,OPT,MAX"),
        ("", "takes N or MIN,OPT,MAX"),
        ("a,b,c", "must be a whole number"),
        ("1.5", "must be a whole number"),
        (True, "must be a whole number"),
        ("0", "at least 1"),
        (-2, "at least 1"),
        ("0,1,2", "at least 1"),
        ("8,4,2", "min <= opt <= max, got 8,4,2"),
        ("1,16,8", "min <= opt <= max, got 1,16,8"),
        ("4,1,8", "min <= opt <= max"),
    ],
)
def test_parse_profile_invalid(batch, message):
    with pytest.raises(InvalidArgumentError, match=message.replace(".", r"\.")):
        parse_profile(batch)


def test_profile_shapes_are_nhwc():
    assert profile_shapes((1, 4, 8), (32, 24, 3)) == ((1, 32, 24, 3), (4, 32, 24, 3), (8, 32, 24, 3))


def test_profile_shapes_rejects_bad_input_shape():
    with pytest.raises(InvalidArgumentError, match="height, width, channels"):
        profile_shapes((1, 1, 1), (32, 32))


# validate_options / onnx_format_for -------------------------------------------------------------

def test_validate_options_accepts_defaults_and_full_set(tmp_path):
    validate_options(TRT_DEFAULTS)
    validate_options({**TRT_DEFAULTS, "precision": "int8", "workspace": "512", "batch": "1,8,32",
                      "dla_core": 1, "timing_cache": str(tmp_path / "trt.cache")})
    validate_options({**TRT_DEFAULTS, "precision": "fp16", "hardware_compatibility": True})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "int4"}, "precision must be one of fp32, fp16, int8, not 'int4'"),
        ({"precision": "FP16"}, "precision must be one of"),
        ({"workspace": 0}, "workspace is in MiB and must be positive"),
        ({"workspace": -5}, "must be positive"),
        ({"workspace": "lots"}, "workspace .MiB. must be a whole number"),
        ({"workspace": True}, "must be a whole number"),
        ({"dla_core": -1}, "dla-core must be 0 or more"),
        ({"dla_core": "x"}, "dla-core must be a whole number"),
        ({"batch": "8,1,1"}, "min <= opt <= max"),
        ({"hardware_compatibility": "yes"}, "must be true or false"),
        ({"hardware_compatibility": True, "dla_core": 0}, "does not apply to DLA"),
        ({"timing_cache": 5}, "must be a file path"),
    ],
)
def test_validate_options_rejects(changes, message):
    with pytest.raises(InvalidArgumentError, match=message):
        validate_options({**TRT_DEFAULTS, **changes})


def test_validate_options_rejects_directory_timing_cache(tmp_path):
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        validate_options({**TRT_DEFAULTS, "timing_cache": str(tmp_path)})


def test_int8_onnx_row_takes_trt_scheme():
    assert {"scheme", "calib_method", "opset"} <= set(FORMATS["onnx-int8"].options)


def test_an_unknown_precision_is_refused():
    with pytest.raises(InvalidArgumentError, match="not 'bf16'"):
        validate_options({**TRT_DEFAULTS, "precision": "bf16"})


def test_convert_validates_before_anything_heavy(tmp_path):
    job = ExportJob(None, ModelMetadata("m", (32, 32, 3)), tmp_path / "x.engine", FORMATS["trt"],
                    {**TRT_DEFAULTS, "batch": "8,4,2"})
    with pytest.raises(InvalidArgumentError, match="min <= opt <= max"):
        trt_export.convert(job)
    assert not (tmp_path / "x.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_convert_without_tensorrt_is_one_line_missing_dependency(tmp_path):
    job = ExportJob(None, ModelMetadata("m", (32, 32, 3)), tmp_path / "x.engine", FORMATS["trt"], TRT_DEFAULTS)
    with pytest.raises(MissingDependencyError, match=r"resnet-edge\[tensorrt\]") as info:
        trt_export.convert(job)
    assert "\n" not in str(info.value)


def test_first_parser_error_is_one_line():
    assert first_parser_error(FakeOnnxParser(FakeTensorRT(parse_ok=False))) == "node n7: Unsupported operator QLinearConv"
    assert first_parser_error(FakeOnnxParser(FakeTensorRT())) == "no error reported"


# engine header --------------------------------------------------------------------------------

def test_engine_header_round_trip(tmp_path):
    metadata = trt_metadata()
    blob = engine_container.pack_engine(b"SERIALIZED-ENGINE", metadata)
    assert blob.startswith(engine_container.ENGINE_MAGIC)
    unpacked, engine = engine_container.unpack_engine(blob, "m.engine")
    assert unpacked == metadata
    assert bytes(engine) == b"SERIALIZED-ENGINE"
    assert unpacked.extra["tensorrt"]["profile"] == [1, 4, 8]
    path = tmp_path / "m.engine"
    path.write_bytes(blob)
    assert engine_container.read_engine(path) == metadata
    assert artifact.read_metadata(path) == metadata


def test_engine_plain_without_header():
    metadata, engine = engine_container.unpack_engine(b"\x00\x01plain-trt-plan", "plain.engine")
    assert metadata is None
    assert bytes(engine) == b"\x00\x01plain-trt-plan"


def test_engine_truncated_header(tmp_path):
    blob = engine_container.pack_engine(b"ENGINE", trt_metadata())
    with pytest.raises(ModelFileError, match="truncated engine header"):
        engine_container.unpack_engine(blob[: len(engine_container.ENGINE_MAGIC) + 3], "m.engine")
    with pytest.raises(ModelFileError, match="corrupt or truncated engine header"):
        engine_container.unpack_engine(blob[: len(engine_container.ENGINE_MAGIC) + 8 + 10], "m.engine")
    header_only = blob[: -len(b"ENGINE")]
    with pytest.raises(ModelFileError, match="engine itself is missing"):
        engine_container.unpack_engine(header_only, "m.engine")
    path = tmp_path / "header-only.engine"
    path.write_bytes(header_only)
    assert engine_container.read_engine(path) == trt_metadata()


# compatibility --------------------------------------------------------------------------------

def test_compatible_engine_passes():
    check_engine_compatibility(trt_metadata(), "10.8.0", "8.9")
    check_engine_compatibility(trt_metadata(), "10.8.1.post1", "8.9")
    check_engine_compatibility(None, "11.0.0", "9.0")
    check_engine_compatibility(ModelMetadata("m", (4, 4, 3)), "11.0.0", "9.0")


def test_other_tensorrt_version_is_refused():
    with pytest.raises(ModelFileError, match=r"built with TensorRT 10\.8\.0, this is TensorRT 11\.1\.0") as info:
        check_engine_compatibility(trt_metadata(), "11.1.0", "8.9", "m.engine")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFileError, match=r"TensorRT 10\.8\.0"):
        check_engine_compatibility(trt_metadata(), "10.9.0", "8.9")


def test_other_gpu_is_refused():
    with pytest.raises(ModelFileError, match=r"built for NVIDIA L4 \(compute capability 8\.9\).*capability 9\.0"):
        check_engine_compatibility(trt_metadata(), "10.8.0", "9.0", "m.engine")


def test_hardware_compatible_engine_runs_on_ampere_plus_only():
    metadata = trt_metadata(hardware_compatibility=True)
    check_engine_compatibility(metadata, "10.8.0", "9.0")
    check_engine_compatibility(metadata, "10.8.0", "12.0")
    with pytest.raises(ModelFileError, match="Ampere or newer"):
        check_engine_compatibility(metadata, "10.8.0", "7.5")


def test_check_batch_names_the_profile():
    check_batch(4, (1, 4, 8))
    with pytest.raises(DataError, match=r"batch of 9 .*min 1, opt 4, max 8"):
        check_batch(9, (1, 4, 8), "m.engine")
    with pytest.raises(DataError, match="min 2"):
        check_batch(1, (2, 4, 8))


# cuda-python return convention ------------------------------------------------------------------

def test_check_cuda_unwraps_and_raises():
    runtime = FakeCudart()
    ok = CudaError.cudaSuccess
    assert check_cuda((ok,), "x", runtime) is None
    assert check_cuda((ok, 5), "x", runtime) == 5
    assert check_cuda((ok, 1, 2), "x", runtime) == (1, 2)
    with pytest.raises(DeviceError, match=r"^CUDA cudaMalloc failed: cudaErrorMemoryAllocation \(fake failure\)$"):
        check_cuda((CudaError.cudaErrorMemoryAllocation, 0), "cudaMalloc", runtime)


def test_gpu_info_without_driver_is_device_error():
    class OldCudartWithoutDriver(FakeCudart):
        """cuda-python before 12.6 (cuda.cudart) raises instead of returning a status when there is no driver."""

        __slots__ = ()

        def cudaGetDeviceCount(self):
            raise RuntimeError("Failed to dlopen libcuda.so.1\nsecond line")

    with pytest.raises(DeviceError, match=r"^CUDA device query failed: Failed to dlopen libcuda\.so\.1 \(is an NVIDIA"):
        gpu_info(OldCudartWithoutDriver())
    runtime = FakeCudart()
    runtime.fail.add("cudaGetDeviceCount")
    with pytest.raises(DeviceError, match=r"device query .* failed: cudaErrorMemoryAllocation"):
        gpu_info(runtime)
    assert gpu_info(FakeCudart(integrated=True)) == GpuInfo("Fake GPU", "8.9", True)


def test_null_tensorrt_object_is_device_error():
    trt = FakeTensorRT(null_factories=True)
    logger = make_logger(trt)
    with pytest.raises(DeviceError, match=r"^TensorRT cannot create its Builder \(it logged no reason"):
        create(logger, trt.Builder, logger)
    logger.log(Severity.ERROR, "CUDA initialization failure with error: 35\nmore")
    with pytest.raises(DeviceError, match=r"^TensorRT cannot create its Runtime \(CUDA initialization failure with error: 35\)$"):
        create(logger, trt.Runtime, logger)

    def wrong_arguments(logger):
        raise TypeError("__init__(): incompatible constructor arguments")

    with pytest.raises(TypeError, match="incompatible"):
        create(logger, wrong_arguments, logger)


# Jetson detection -----------------------------------------------------------------------------

def test_is_jetson_from_tegra_release(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0\n")
    assert is_jetson(release, tmp_path / "missing-model")


def test_is_jetson_from_device_tree_model(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_jetson(tmp_path / "missing-release", model)
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert not is_jetson(tmp_path / "missing-release", model)
    assert not is_jetson(tmp_path / "missing-release", tmp_path / "missing-model")


def test_jetson_is_a_device_of_the_tensorrt_backend():
    jetson_class = BACKENDS["tensorrt"].backend_class("jetson")
    assert issubclass(jetson_class, TensorRTBackend) and jetson_class is not TensorRTBackend
    assert jetson_class.name == TensorRTBackend.name == "tensorrt"
    assert TensorRTBackend.devices == ("jetson", "cuda")
    assert BACKENDS["tensorrt"].backend_class("cuda") is TensorRTBackend
    assert BACKENDS["tensorrt"].backend_class("jetson") is jetson_class
    assert BACKENDS["tensorrt"].backend_class() is TensorRTBackend


@pytest.mark.skipif(is_jetson(), reason="this machine is a Jetson")
def test_jetson_device_refuses_other_machines(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(engine_container.pack_engine(b"ENGINE", trt_metadata()))
    with pytest.raises(DeviceError, match="not a Jetson") as info:
        BACKENDS["tensorrt"].backend_class("jetson")(path, "jetson")
    assert "\n" not in str(info.value)
    with pytest.raises(DeviceError, match="not a Jetson"):
        load(path, device="jetson")
    assert "jetson" not in TensorRTBackend.available_devices()
    assert BACKENDS["tensorrt"].backend_class("jetson").available_devices() == ()


# availability and loading here -------------------------------------------------------------------

def _no_gpu_stack() -> bool:
    return TensorRTBackend.available_devices() == ()


def test_available_devices_does_not_raise():
    devices = TensorRTBackend.available_devices()
    assert devices in ((), ("cuda",), ("jetson", "cuda"))
    if not is_jetson():
        assert "jetson" not in devices
    if not HAS_TENSORRT:
        assert devices == ()


@pytest.mark.skipif(not _no_gpu_stack(), reason="TensorRT and a GPU are present")
def test_loading_engine_here_is_a_one_line_error(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(engine_container.pack_engine(b"ENGINE", trt_metadata()))
    for kwargs in ({}, {"device": "cuda"}):
        with pytest.raises((MissingDependencyError, DeviceError)) as info:
            load(path, **kwargs)
        assert "\n" not in str(info.value)
        assert "Traceback" not in str(info.value)
    with pytest.raises(DeviceError, match="runs on jetson, cuda, not cpu"):
        load(path, device="cpu")


# fake TensorRT + CUDA: the runtime's buffer, batch and zero-copy logic ----------------------------

@pytest.fixture
def fake_stack(monkeypatch):
    def install(integrated: bool = False, dla_cores: int = 0, jetson: bool = False, **trt_options):
        cudart, trt = FakeCudart(integrated), FakeTensorRT(dla_cores, **trt_options)
        monkeypatch.setattr(backend_module, "cuda_runtime", lambda: cudart)
        monkeypatch.setattr(backend_module, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(jetson_module, "is_jetson", lambda *args: jetson)
        monkeypatch.setattr(machine, "is_jetson", lambda *args: jetson)
        return cudart, trt

    return install


def write_engine(tmp_path: Path, metadata: ModelMetadata | None = None, engine: bytes = b"FAKE-ENGINE") -> Path:
    path = tmp_path / "m.engine"
    path.write_bytes(engine_container.pack_engine(engine, metadata or trt_metadata(compute_capability="8.9")))
    return path


def expected_logits(batch: np.ndarray) -> np.ndarray:
    sums = batch.reshape(len(batch), -1).sum(axis=1, keepdims=True, dtype=np.float64)
    return (2 * sums + np.arange(10)).astype(np.float32)


def test_fake_stack_runs_with_copies_and_grows_buffers(fake_stack, tmp_path):
    cudart, _ = fake_stack()
    assert TensorRTBackend.available_devices() == ("cuda",)
    predictor = load(write_engine(tmp_path))
    assert predictor.input_spec == InputSpec(4, 4, 3, "float32", None)
    assert predictor.backend.profile == (1, 2, 4)
    assert predictor.backend.output_names == ["logits"]
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 255, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(predictor(batch), expected_logits(batch))
    assert {"memcpy:H2D", "memcpy:D2H"} <= set(cudart.calls)
    assert cudart.calls.count("cudaMalloc") == 2

    bigger = rng.integers(0, 255, (4, 4, 4, 3)).astype(np.uint8)
    out = predictor(bigger)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected_logits(bigger))
    assert cudart.calls.count("cudaMalloc") == 4
    assert cudart.calls.count("cudaFree") == 2

    first = predictor(bigger[:1])
    np.testing.assert_allclose(first, expected_logits(bigger[:1]))
    assert cudart.calls.count("cudaMalloc") == 4
    first[:] = 0
    np.testing.assert_allclose(predictor(bigger[:1]), expected_logits(bigger[:1]))

    with pytest.raises(DataError, match=r"batch of 5 .*min 1, opt 2, max 4"):
        predictor(np.zeros((5, 4, 4, 3), np.float32))
    predictor.close()
    assert cudart.blocks == {}
    assert "cudaStreamDestroy" in cudart.calls
    predictor.close()


def test_fake_stack_refuses_other_version_and_gpu(fake_stack, tmp_path):
    fake_stack()
    with pytest.raises(ModelFileError, match=r"TensorRT 9\.3\.0, this is TensorRT 10\.8\.0"):
        load(write_engine(tmp_path, trt_metadata(version="9.3.0")), device="cuda")
    with pytest.raises(ModelFileError, match=r"compute capability 7\.5\), this GPU has compute capability 8\.9"):
        load(write_engine(tmp_path, trt_metadata(compute_capability="7.5")), device="cuda")


def test_fake_stack_corrupt_engine_is_one_line(fake_stack, tmp_path):
    fake_stack()
    with pytest.raises(ModelFileError, match=r"cannot load the engine \(Serialization assertion failed\)$") as info:
        load(write_engine(tmp_path, engine=b"garbage"), device="cuda")
    assert "\n" not in str(info.value)


def test_fake_stack_cuda_failure_is_device_error(fake_stack, tmp_path):
    cudart, _ = fake_stack()
    predictor = load(write_engine(tmp_path), device="cuda")
    cudart.fail.add("cudaMalloc")
    with pytest.raises(DeviceError, match="CUDA cudaMalloc failed: cudaErrorMemoryAllocation"):
        predictor(np.zeros((1, 4, 4, 3), np.float32))
    predictor.close()
    assert cudart.blocks == {}


def test_fake_stack_dequantizes_integer_outputs(fake_stack, tmp_path):
    fake_stack()
    metadata = trt_metadata().replace(output_quantization=Quantization(0.5, 3))
    predictor = load(write_engine(tmp_path, metadata), device="cuda")
    predictor.backend._dtypes["logits"] = np.dtype(np.int32)
    batch = np.zeros((1, 4, 4, 3), np.float32)
    out = predictor(batch)
    raw = expected_logits(batch).view(np.int32)
    np.testing.assert_allclose(out, (raw.astype(np.float32) - 3) * 0.5)
    predictor.close()


def test_fake_stack_null_runtime_is_device_error(fake_stack, tmp_path):
    fake_stack(null_factories=True)
    with pytest.raises(DeviceError, match=r"cannot create its Runtime \(it logged no reason; is the NVIDIA driver"):
        load(write_engine(tmp_path), device="cuda")


def test_fake_stack_dla_engine_needs_jetson_device(fake_stack, tmp_path):
    fake_stack(dla_cores=2)
    with pytest.raises(DeviceError, match="built for DLA core 1: load it with device='jetson'"):
        load(write_engine(tmp_path, trt_metadata(dla_core=1)), device="cuda")


def test_fake_jetson_zero_copy_and_dla(fake_stack, tmp_path):
    cudart, trt = fake_stack(integrated=True, dla_cores=2, jetson=True)
    assert TensorRTBackend.available_devices() == ("jetson", "cuda")
    assert BACKENDS["tensorrt"].backend_class("jetson").available_devices() == ("jetson",)
    predictor = load(write_engine(tmp_path, trt_metadata(dla_core=1)), device="jetson")
    assert type(predictor.backend) is BACKENDS["tensorrt"].backend_class("jetson")
    assert predictor.backend.name == "tensorrt" and predictor.device == "jetson"
    assert trt.runtimes[-1].DLA_core == 1
    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    np.testing.assert_allclose(predictor(batch), expected_logits(batch))
    assert not any(call.startswith("memcpy") for call in cudart.calls)
    assert cudart.calls.count("cudaHostAlloc") == 2 and "cudaMalloc" not in cudart.calls
    predictor.close()
    assert cudart.blocks == {}
    assert "cudaFree" not in cudart.calls


def test_fake_jetson_is_the_preferred_device_on_a_jetson(fake_stack, tmp_path):
    cudart, _ = fake_stack(integrated=True, jetson=True)
    with load(write_engine(tmp_path)) as predictor:
        assert predictor.device == "jetson" and type(predictor.backend) is BACKENDS["tensorrt"].backend_class("jetson")
        batch = np.ones((1, 4, 4, 3), np.float32)
        np.testing.assert_allclose(predictor(batch), expected_logits(batch))
    assert "cudaHostAlloc" in cudart.calls and "cudaMalloc" not in cudart.calls
    with load(write_engine(tmp_path), device="cuda") as predictor:
        assert type(predictor.backend) is TensorRTBackend and predictor.device == "cuda"


def test_fake_jetson_discrete_gpu_keeps_copies(fake_stack, tmp_path):
    cudart, _ = fake_stack(integrated=False, jetson=True)
    predictor = load(write_engine(tmp_path), device="jetson")
    batch = np.ones((1, 4, 4, 3), np.float32)
    np.testing.assert_allclose(predictor(batch), expected_logits(batch))
    assert "memcpy:H2D" in cudart.calls and "cudaHostAlloc" not in cudart.calls
    predictor.close()


def test_fake_jetson_missing_dla_core(fake_stack, tmp_path):
    fake_stack(dla_cores=1, jetson=True)
    with pytest.raises(DeviceError, match="built for DLA core 1, this Jetson has 1 DLA core"):
        load(write_engine(tmp_path, trt_metadata(dla_core=1)), device="jetson")


# fake TensorRT builder: the exporter's network, config, profile and cache handling -----------------

@pytest.fixture
def fake_builder(monkeypatch):
    def install(**kwargs):
        stack = FakeTensorRT(**kwargs)
        monkeypatch.setattr(trt_export, "import_tensorrt", lambda: stack)
        monkeypatch.setattr(trt_export, "gpu_info", lambda: GpuInfo("Fake L4", "8.9", False))
        exported = stack.log.setdefault("onnx_jobs", [])

        def fake_onnx(job, precision, path):
            exported.append((precision, path.name))
            path.write_bytes(b"ONNX-" + precision.encode())
            return job.metadata.replace(format="onnx", precision=precision,
                                        extra={"quantization": "q"} if precision == "int8" else {})

        monkeypatch.setattr(trt_export, "_export_onnx", fake_onnx)
        return stack

    return install


def trt_job(tmp_path: Path, **options) -> ExportJob:
    messages: list[str] = []
    metadata = ModelMetadata("tiny", (4, 4, 3), labels=tuple("abcdefghij"))
    job = ExportJob(None, metadata, tmp_path / "out.tmp.engine", FORMATS["trt"], {**TRT_DEFAULTS, **options},
                    progress=messages.append)
    job.messages = messages  # type: ignore[attr-defined]
    return job


def test_fake_builder_writes_engine_with_metadata(fake_builder, tmp_path):
    stack = fake_builder()
    cache = tmp_path / "caches" / "trt.cache"
    job = trt_job(tmp_path, precision="int8", batch="1,2,4", workspace=256, timing_cache=str(cache))
    metadata = trt_export.convert(job)
    assert stack.log["parsed"] == b"ONNX-int8"
    assert stack.log["network_flags"] == 1 << 1
    assert stack.log["workspace"] == (MemoryPoolType.WORKSPACE, 256 << 20)
    assert stack.log["profile"] == ("input_layer_7", (1, 4, 4, 3), (2, 4, 4, 3), (4, 4, 4, 3))
    assert cache.read_bytes() == b"+new"
    config = stack.log["config"]
    assert config.default_device_type is DeviceType.GPU and config.DLA_core == -1 and stack.flags == []
    assert config.hardware_compatibility_level is HardwareCompatibilityLevel.NONE
    assert metadata.format == "trt" and metadata.precision == "int8"
    info = metadata.extra["tensorrt"]
    assert info == {"version": "10.8.0", "gpu": "Fake L4", "compute_capability": "8.9", "precision": "int8",
                    "profile": [1, 2, 4], "dla_core": None, "hardware_compatibility": False,
                    "source": "ONNX int8 Q/DQ s8s8"}
    assert metadata.extra["quantization"] == "q"
    assert metadata.tools["tensorrt"] == "10.8.0"
    stored, engine = engine_container.unpack_engine(job.output.read_bytes(), "out")
    assert stored == metadata and bytes(engine) == b"BUILT-ENGINE"

    trt_export.convert(trt_job(tmp_path, timing_cache=str(cache)))
    assert cache.read_bytes() == b"+new+new"


def test_fake_builder_dla_and_hardware_compatibility(fake_builder, tmp_path):
    stack = fake_builder(dla_cores=2)
    trt_export.convert(trt_job(tmp_path, dla_core=1, precision="fp16"))
    config = stack.log["config"]
    assert config.default_device_type is DeviceType.DLA and config.DLA_core == 1
    assert stack.flags == [BuilderFlag.GPU_FALLBACK]
    with pytest.raises(InvalidArgumentError, match=r"DLA cores 0\.\.1"):
        trt_export.convert(trt_job(tmp_path, dla_core=2))
    fake_builder(dla_cores=0)
    with pytest.raises(DeviceError, match="has no DLA"):
        trt_export.convert(trt_job(tmp_path, dla_core=0))
    stack = fake_builder()
    metadata = trt_export.convert(trt_job(tmp_path, hardware_compatibility=True))
    assert stack.log["config"].hardware_compatibility_level is HardwareCompatibilityLevel.AMPERE_PLUS
    assert metadata.extra["tensorrt"]["hardware_compatibility"] is True


def test_fake_builder_errors_are_one_line(fake_builder, tmp_path):
    fake_builder(parse_ok=False)
    with pytest.raises(ExportError, match="cannot parse the fp32 ONNX: node n7: Unsupported operator QLinearConv"):
        trt_export.convert(trt_job(tmp_path))
    fake_builder(build_ok=False)
    with pytest.raises(ExportError, match=r"could not build the engine: Internal Error \(could not find"):
        trt_export.convert(trt_job(tmp_path))
    fake_builder(input_shape=(1, 4, 4, 3))
    with pytest.raises(InvalidArgumentError, match="fixed batch of 1; use --batch 1"):
        trt_export.convert(trt_job(tmp_path, batch="1,4,8"))
    fake_builder(input_shape=(-1, 3, 4, 4))
    with pytest.raises(ExportError, match="expected NHWC"):
        trt_export.convert(trt_job(tmp_path))
    fake_builder(null_factories=True)
    with pytest.raises(DeviceError, match=r"^TensorRT cannot create its Builder \(") as info:
        trt_export.convert(trt_job(tmp_path))
    assert NULLPTR not in str(info.value)


# real TensorRT on a GPU ------------------------------------------------------------------------

TOLERANCE = {"fp32": 2e-3, "fp16": 2e-2, "int8": 0.1}


def _require_tensorrt_gpu() -> None:
    pytest.importorskip("tensorrt")
    if TensorRTBackend.available_devices() == ():
        pytest.skip("no CUDA device (or cuda-python) for TensorRT")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_parity_with_keras(tmp_path, precision):
    _require_tensorrt_gpu()
    from resnet_edge.data import load_dataset
    from resnet_edge.exporter import export
    from resnet_edge.models import build_resnet

    model = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    calibration = None
    if precision == "int8":
        from calibration import CalibrationSet

        calibration = CalibrationSet.from_source("digits", (32, 32), count=128)
    result = export(model, "trt", tmp_path / f"{precision}.engine", calibration=calibration, verify=False,
                    precision=precision, batch="1,4,8", timing_cache=str(tmp_path / "trt.cache"))
    assert (tmp_path / "trt.cache").is_file()
    metadata = engine_container.read_engine(result.path)
    assert metadata.format == "trt" and metadata.precision == precision
    assert metadata.extra["tensorrt"]["profile"] == [1, 4, 8]

    images = load_dataset("digits", (32, 32)).images[:8]
    expected = np.asarray(model.predict(images.astype(np.float32), verbose=0), dtype=np.float32)
    with load(result.path, device="cuda") as predictor:
        got = np.concatenate([predictor(images[:1]), predictor(images[1:8])])
        with pytest.raises(DataError, match="max 8"):
            predictor(np.concatenate([images, images[:1]]))
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.max(np.abs(got - expected)) <= TOLERANCE[precision] * max(1.0, float(np.abs(expected).max()))
    if precision != "int8":
        assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.875
