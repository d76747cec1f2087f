"""Keras model -> ONNX of the wanted precision -> strongly typed TensorRT engine with metadata header.

TensorRT 11 dropped weak typing (``BuilderFlag.FP16/INT8``, INT8 calibrators), so the precision is
decided by the ONNX itself: fp32 ONNX, fp16 ONNX, or int8 Q/DQ ONNX (symmetric, zero-point 0).
The same path works on TensorRT 10 (JetPack), where DLA is still available.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ... import machine
from ...atomic import write_bytes
from ...errors import DeviceError, ExportError, InvalidArgumentError, first_line
from ...interchange import build_onnx, save_onnx
from ...metadata import ModelMetadata, tool_versions
from ...runtime import ExportJob
from .compat import HARDWARE_COMPATIBILITY_MIN_CC
from .container import pack_engine
from .cuda import GpuInfo, gpu_info
from .trtlog import create, import_tensorrt, make_logger

PRECISIONS = ("fp32", "fp16", "int8")
INT8_SCHEME = "s8s8"
MIB = 1 << 20


def _whole_number(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    raise InvalidArgumentError(f"{what} must be a whole number, got {value!r}")


def parse_profile(batch: str | int | Sequence[int]) -> tuple[int, int, int]:
    """``"min,opt,max"``, one number, or a 3-sequence -> (min, opt, max) batch sizes of the profile."""
    if isinstance(batch, str):
        pieces = [p.strip() for p in batch.split(",")]
    elif isinstance(batch, Sequence):
        pieces = list(batch)
    else:
        pieces = [batch]
    if len(pieces) == 1:
        pieces = pieces * 3
    if len(pieces) != 3 or any(p == "" for p in pieces):
        raise InvalidArgumentError(f"--batch takes N or MIN,OPT,MAX (e.g. 1,8,32), got {batch!r}")
    sizes = tuple(_whole_number(p, "--batch sizes") for p in pieces)
    if min(sizes) < 1:
        raise InvalidArgumentError(f"--batch sizes must be at least 1, got {batch!r}")
    low, opt, high = sizes
    if not low <= opt <= high:
        raise InvalidArgumentError(f"--batch MIN,OPT,MAX needs min <= opt <= max, got {low},{opt},{high}")
    return low, opt, high


def profile_shapes(
    profile: Sequence[int], input_shape: Sequence[int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The NHWC min/opt/max input shapes of the optimization profile."""
    if len(input_shape) != 3:
        raise InvalidArgumentError(f"input shape must be (height, width, channels), got {tuple(input_shape)}")
    height, width, channels = (int(v) for v in input_shape)
    low, opt, high = (int(b) for b in profile)
    return (low, height, width, channels), (opt, height, width, channels), (high, height, width, channels)


def validate_options(options: Mapping[str, Any]) -> None:
    """Check every TensorRT option before anything heavy (TensorFlow, ONNX, TensorRT) is touched."""
    precision = options.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    workspace = _whole_number(options.get("workspace", 4096), "--workspace (MiB)")
    if workspace <= 0:
        raise InvalidArgumentError(f"--workspace is in MiB and must be positive, got {workspace}")
    dla_core = options.get("dla_core")
    if dla_core is not None and _whole_number(dla_core, "--dla-core") < 0:
        raise InvalidArgumentError(f"--dla-core must be 0 or more, got {dla_core}")
    parse_profile(options.get("batch", "1,1,1"))
    cache = options.get("timing_cache")
    if cache is not None:
        if not isinstance(cache, (str, os.PathLike)) or not str(cache):
            raise InvalidArgumentError(f"--timing-cache must be a file path, got {cache!r}")
        if Path(cache).is_dir():
            raise InvalidArgumentError(f"--timing-cache {cache} is a directory; give a file path")
    hardware_compatibility = options.get("hardware_compatibility", False)
    if not isinstance(hardware_compatibility, bool):
        raise InvalidArgumentError(f"--hardware-compatibility must be true or false, got {hardware_compatibility!r}")
    if hardware_compatibility and dla_core is not None:
        raise InvalidArgumentError("--hardware-compatibility does not apply to DLA engines (--dla-core)")


def first_parser_error(parser: Any) -> str:
    """The parser's first error as one line: node name (when known) and description."""
    if not parser.num_errors:
        return "no error reported"
    error = parser.get_error(0)
    node = str(error.node_name() or "")
    text = first_line(error.desc()) or "unknown parser error"
    return f"node {node}: {text}" if node else text


def no_dla_reason(gpu: GpuInfo, cores: int, jetson_model: str | None) -> str | None:
    """Why ``--dla-core`` cannot apply here (one line), or None when this device has DLA cores: a discrete GPU has
    none, nor has Thor or the Orin Nano; TensorRT's own count decides on any other Jetson."""
    if cores > 0:
        return None
    if not gpu.integrated:
        return (f"{gpu.name} is a discrete GPU, which has no DLA (DLA cores exist only on Jetson AGX Orin, Orin NX "
                "and Xavier); build without --dla-core")
    if jetson_model and machine.has_no_dla(jetson_model):
        return f"{jetson_model} has no DLA (Thor and the Orin Nano have none); build without --dla-core"
    return f"{jetson_model or gpu.name} has no DLA core TensorRT can use; build without --dla-core"


def check_dla_core(trt: ModuleType, options: Mapping[str, Any], gpu: GpuInfo) -> None:
    """Refuse ``--dla-core`` on a device without DLA, before the ONNX is exported (one line, no work lost)."""
    dla_core = options.get("dla_core")
    if dla_core is None:
        return
    logger = make_logger(trt)
    cores = int(create(logger, trt.Builder, logger).num_DLA_cores)
    reason = no_dla_reason(gpu, cores, machine.jetson_model() if machine.is_jetson() else None)
    if reason is not None:
        raise DeviceError(f"--dla-core {dla_core}: {reason}")
    if int(dla_core) >= cores:
        raise InvalidArgumentError(f"--dla-core {dla_core}: this device has DLA cores 0..{cores - 1}")


def jetson_release() -> dict[str, Any] | None:
    """The Jetson an engine was built on (model, L4T and JetPack release) for its metadata; None elsewhere."""
    found = machine.jetson()
    if found is None:
        return None
    return {key: found[key] for key in ("model", "l4t", "jetpack") if found.get(key)}


def _export_onnx(job: ExportJob, precision: str, path: Path) -> ModelMetadata:
    """Write the ONNX a strongly typed network takes for ``precision`` (int8: the symmetric Q/DQ file)."""
    if precision == "int8" and job.calibration is None:
        raise InvalidArgumentError("TensorRT int8 needs calibration data: pass --calib-data DIR|photos|digits|FILE.npy")
    job.progress(f"exporting the {precision} ONNX as the TensorRT source")
    proto, metadata = build_onnx(job, precision, scheme=INT8_SCHEME, method=job.options.get("calib_method", "minmax"))
    return save_onnx(proto, metadata, path)


def _timing_cache(trt: ModuleType, config: Any, path: str | os.PathLike[str] | None, progress: Any) -> None:
    if path is None:
        return
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(data), False):
        progress(f"timing cache {path} was made for another GPU or TensorRT; starting a fresh one")
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _build_engine(
    trt: ModuleType, onnx_path: Path, job: ExportJob, profile: tuple[int, int, int], gpu: GpuInfo
) -> bytes:
    """Parse the ONNX into a strongly typed network and build the serialized engine."""
    options = job.options
    logger = make_logger(trt)
    builder = create(logger, trt.Builder, logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = create(logger, trt.OnnxParser, network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ExportError(f"TensorRT cannot parse the {options['precision']} ONNX: {first_parser_error(parser)}")
    if network.num_inputs != 1:
        raise ExportError(f"expected a network with one input, the ONNX has {network.num_inputs}")
    tensor = network.get_input(0)
    shapes = profile_shapes(profile, job.metadata.input_shape)
    declared = tuple(int(d) for d in tensor.shape)
    if len(declared) != 4 or declared[1:] != shapes[0][1:]:
        raise ExportError(f"input {tensor.name} has shape {declared}, expected NHWC (N, {', '.join(map(str, shapes[0][1:]))})")
    if declared[0] >= 1 and profile != (declared[0],) * 3:
        raise InvalidArgumentError(f"the ONNX input has a fixed batch of {declared[0]}; use --batch {declared[0]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options["workspace"]) * MIB)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(optimization_profile)

    dla_core = options.get("dla_core")
    if dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if cores == 0:
            raise DeviceError(f"--dla-core {dla_core}: {no_dla_reason(gpu, cores, None)}")
        if int(dla_core) >= cores:
            raise InvalidArgumentError(f"--dla-core {dla_core}: this device has DLA cores 0..{cores - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.get("hardware_compatibility"):
        capability = tuple(int(p) for p in gpu.compute_capability.split("."))
        if capability < HARDWARE_COMPATIBILITY_MIN_CC:
            raise InvalidArgumentError(f"--hardware-compatibility needs an Ampere or newer GPU, {gpu.name} is "
                                       f"compute capability {gpu.compute_capability}")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    cache_path = options.get("timing_cache")
    _timing_cache(trt, config, cache_path, job.progress)

    low, opt, high = profile
    job.progress(f"building TensorRT {options['precision']} engine for {gpu.name} (batch {low},{opt},{high})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build the engine: {logger.first_error()}")
    if cache_path is not None:
        write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def convert(job: ExportJob) -> ModelMetadata:
    """Write a strongly typed TensorRT engine, metadata header first, to ``job.output``."""
    validate_options(job.options)
    options = job.options
    precision = options.get("precision", "fp32")
    profile = parse_profile(options.get("batch", "1,1,1"))
    trt = import_tensorrt()
    gpu = gpu_info()
    check_dla_core(trt, options, gpu)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-trt-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_metadata = _export_onnx(job, precision, onnx_path)
        engine = _build_engine(trt, onnx_path, job, profile, gpu)

    dla_core = options.get("dla_core")
    extra = {
        **onnx_metadata.extra,
        "tensorrt": {
            "version": trt.__version__,
            "gpu": gpu.name,
            "compute_capability": gpu.compute_capability,
            "precision": precision,
            "profile": list(profile),
            "dla_core": None if dla_core is None else int(dla_core),
            "hardware_compatibility": bool(options.get("hardware_compatibility", False)),
            "source": f"ONNX {precision}" + (f" Q/DQ {INT8_SCHEME}" if precision == "int8" else ""),
        },
    }
    built_on = jetson_release()
    if built_on:  # which JetPack built it: its TensorRT and CUDA are the ones that may load it
        extra["jetson"] = built_on
    tools = {**onnx_metadata.tools, **tool_versions("cuda-python", "cuda-bindings"), "tensorrt": trt.__version__}
    metadata = job.metadata.replace(
        format="trt",
        precision=precision,
        input_dtype=onnx_metadata.input_dtype,
        input_quantization=onnx_metadata.input_quantization,
        output_quantization=onnx_metadata.output_quantization,
        output_activation=onnx_metadata.output_activation,
        extra=extra,
        tools=tools,
    )
    Path(job.output).write_bytes(pack_engine(engine, metadata))
    return metadata
