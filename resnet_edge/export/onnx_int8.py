"""ONNX Runtime static quantization (QDQ, per-channel int8 weights), calibrated on a CalibrationSet.

``scheme="cpu"``: uint8 activations + int8 weights (U8S8), the combination ONNX Runtime fuses on x86.
``scheme="trt"``: symmetric int8 activations and weights, zero-points 0, float biases: what TensorRT's
explicit quantization takes, so the Q/DQ file is also the TensorRT int8 calibration cache.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .._lazy import lazy_import
from .._quiet import quiet
from ..errors import ExportError, InvalidArgumentError, ResnetEdgeError
from ..metadata import ModelMetadata, tool_versions
from . import ExportJob
from .onnx import INPUT_NAME, ONNX_TOOLS, save_onnx, to_onnx_proto

SCHEMES = ("cpu", "trt")
CALIB_METHODS = ("minmax", "entropy", "percentile")


def quantize_onnx(source: Path, target: Path, job: ExportJob, scheme: str, method: str) -> None:
    """Pre-process (shape inference, fusions) and statically quantize ``source`` into ``target``."""
    lazy_import("sympy", extra="export")  # quant_pre_process needs it; onnxruntime does not install it
    quantization = lazy_import("onnxruntime.quantization", extra="onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from calibration.onnxrt import write_calibration_cache

    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    symmetric = scheme == "trt"
    prepared, cache = source.with_name("prepared.onnx"), source.with_name("calibration.json")
    try:
        with quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            write_calibration_cache(prepared, job.calibration, INPUT_NAME, methods[method], cache)
        quantization.quantize_static(
            str(prepared),
            str(target),
            calibration_cache_path=str(cache),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QInt8 if symmetric else quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric},
        )
    except (ResnetEdgeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {exc}"[:300]) from exc


def convert(job: ExportJob) -> ModelMetadata:
    onnx = lazy_import("onnx", extra="export")
    scheme, method, opset = job.options["scheme"], job.options["calib_method"], int(job.options["opset"])
    if scheme not in SCHEMES:
        raise InvalidArgumentError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    if method not in CALIB_METHODS:
        raise InvalidArgumentError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, not {method!r}")
    job.progress(f"converting {job.metadata.model} to ONNX (opset {opset})")
    proto = to_onnx_proto(job.model, opset)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-int8-") as workdir:
        source, target = Path(workdir) / "fp32.onnx", Path(workdir) / "int8.onnx"
        onnx.save(proto, str(source))
        job.progress(f"calibrating ONNX int8 ({scheme} scheme, {method}) on {len(job.calibration)} images")
        quantize_onnx(source, target, job, scheme, method)
        quantized = onnx.load(str(target))
    metadata = job.metadata.replace(
        format="onnx-int8", precision="int8", tools=tool_versions(*ONNX_TOOLS, "onnxruntime"),
        extra={"opset": opset, "scheme": scheme, "calib_method": method, "calibration_images": len(job.calibration),
               "calibration_source": job.calibration.source},
    )
    return save_onnx(quantized, metadata, job.output)
