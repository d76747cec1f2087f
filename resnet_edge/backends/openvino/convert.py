"""OpenVINO IR (``.xml`` + ``.bin``) from the project's ONNX conversion: float, and int8 by NNCF or from Q/DQ ONNX.

Each converter writes ``job.output`` and its weights at ``job.output.with_suffix(".bin")`` (where
``openvino.save_model`` puts them); moving both into place is the caller's. The metadata records
``weights_bytes`` (the ``.bin``'s size, so a half-replaced pair is caught at load) and
``inference_precision``, the ``INFERENCE_PRECISION_HINT`` the backend compiles with: the IR keeps fp32
weights either way, ``bf16`` is how the CPU is asked to compute.

int8 (``openvino-int8``): ``method="qdq"`` (the default) converts the calibrated Q/DQ ONNX that
``onnx-int8`` builds (ONNX Runtime's quantizer), which OpenVINO runs as int8; ``method="nncf"`` quantizes
the float model with NNCF post-training quantization (``float_layers`` become its ignored scope). On the
trained ResNet-50 of ``make bench`` qdq kept 100 % of the decisive top-1 answers and NNCF 92.6 %, at the
same speed, so qdq is the default. Both leave a classifier's softmax out of the integer graph (logits out)
unless ``int8_softmax``, take float32 pixels 0-255 NHWC like every artifact, and calibrate on
``job.calibration``.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...errors import ExportError, InvalidArgumentError, ResnetEdgeError, first_line
from ...interchange import ONNX_TOOLS, build_onnx, to_logits_proto, to_onnx_proto
from ...metadata import ModelMetadata, tool_versions
from ...runtime import ExportJob, calibration_extra, ends_in_logits
from .container import embed_openvino, write_openvino

PRECISIONS = {"f32": "fp32", "bf16": "bf16"}  # inference_precision hint -> metadata precision
NNCF_PRESET = "mixed"  # symmetric weights, asymmetric activations
OPENVINO_TOOLS = (*ONNX_TOOLS, "openvino")
DEFAULT_OPSET = 17


def _ov():
    return lazy_import("openvino", extra="openvino")


def weights_path(xml: Path) -> Path:
    """Where an IR's weights are: the ``.bin`` beside the ``.xml``."""
    return Path(xml).with_suffix(".bin")


def _from_onnx(source: Any, what: str, fused: bool = True):
    """The OpenVINO model of an ONNX file path or ``onnx.ModelProto``.

    ``fused``: ``openvino.convert_model``, which also folds batch norms into convolutions (renaming them);
    otherwise ``Core.read_model``, which keeps one node per ONNX node under the ONNX node's name, so a
    Keras layer can be found by name (NNCF's ignored scope). The CPU plugin fuses either at compile time.
    """
    ov = _ov()
    try:
        with quiet(), tempfile.TemporaryDirectory(prefix="resnet-edge-ov-") as workdir:
            if not isinstance(source, (str, Path)):
                if fused:
                    return ov.convert_model(io.BytesIO(source.SerializeToString()))
                path = Path(workdir) / "model.onnx"
                path.write_bytes(source.SerializeToString())
                source = path
            return ov.convert_model(str(source)) if fused else ov.Core().read_model(str(source))
    except Exception as exc:
        raise ExportError(f"OpenVINO could not convert the {what} ONNX model: {first_line(exc, 200)}") from exc


def _float_model(job: ExportJob, logits: bool, fused: bool = True):
    opset = int(job.options.get("opset", DEFAULT_OPSET))
    job.progress(f"converting {job.metadata.model} to ONNX (opset {opset}) for OpenVINO")
    proto = to_logits_proto(job.model, opset) if logits else to_onnx_proto(job.model, opset)
    return _from_onnx(proto, "float", fused), opset


def save_ir(ov_model, metadata: ModelMetadata, output: Path) -> ModelMetadata:
    """Write the IR at ``output`` (+ ``.bin``) with fp32 weights kept, then record the ``.bin``'s size in it.

    The metadata lives only in the ``.xml``, so the weights are the same bytes before and after it is updated.
    """
    ov = _ov()
    embed_openvino(ov_model, metadata)
    try:
        ov.save_model(ov_model, str(output), compress_to_fp16=False)
    except Exception as exc:
        raise ExportError(f"OpenVINO could not save the model: {first_line(exc, 200)}") from exc
    metadata = metadata.replace(extra={**metadata.extra, "weights_bytes": weights_path(output).stat().st_size})
    write_openvino(output, metadata)
    return metadata


def _metadata(job: ExportJob, fmt: str, precision: str, tools: tuple[str, ...], **extra: Any) -> ModelMetadata:
    return job.metadata.replace(format=fmt, precision=precision, tools=tool_versions(*tools), extra=extra)


def convert_float(job: ExportJob) -> ModelMetadata:
    """Format ``openvino``: the float IR, to run at ``inference_precision`` ``f32`` (default) or ``bf16``."""
    hint = job.options["inference_precision"]
    ov_model, opset = _float_model(job, logits=False)
    metadata = _metadata(job, job.format.name, PRECISIONS[hint], OPENVINO_TOOLS, opset=opset,
                         inference_precision=hint)
    return save_ir(ov_model, metadata, job.output)


def _calibration_inputs(job: ExportJob) -> list[np.ndarray]:
    """The calibration images as single-image float32 batches of pixels 0-255 (NNCF collects per sample)."""
    return [image[None].astype(np.float32) for image in job.calibration.images]


def _ignored_scope(ov_model, job: ExportJob, float_layers: tuple[str, ...]):
    """NNCF's IgnoredScope for the nodes computing the given Keras layers (named as in the ONNX graph, as
    ``onnx-int8``'s ``nodes_of_layers`` finds them)."""
    from ...models.naming import keras_layers, layer_of

    nncf = lazy_import("nncf", extra="openvino")
    layers, wanted = keras_layers(job.model), set(float_layers)
    names = [op.get_friendly_name() for op in ov_model.get_ops()
             if op.get_type_name() not in ("Constant", "Parameter", "Result")
             and layer_of(op.get_friendly_name(), layers) in wanted]
    if not names:
        raise InvalidArgumentError(f"no OpenVINO node computes the layers {', '.join(sorted(wanted))}")
    return nncf.IgnoredScope(names=names, validate=False)


def _nncf_quantize(job: ExportJob, logits: bool, float_layers: tuple[str, ...]):
    nncf = lazy_import("nncf", extra="openvino")
    preset = NNCF_PRESET
    ov_model, opset = _float_model(job, logits, fused=False)  # Keras layer names kept, for float_layers
    ignored = _ignored_scope(ov_model, job, float_layers) if float_layers else None
    job.progress(f"calibrating OpenVINO int8 (NNCF, {preset} preset) on {len(job.calibration)} images")
    try:
        with quiet():
            quantized = nncf.quantize(ov_model, nncf.Dataset(_calibration_inputs(job)),
                                      preset=nncf.QuantizationPreset(preset), subset_size=len(job.calibration),
                                      ignored_scope=ignored)
    except (ResnetEdgeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"NNCF quantization failed: {type(exc).__name__}: {first_line(exc, 200)}") from exc
    return quantized, {"opset": opset, "method": "nncf", "preset": preset}


def _qdq_quantize(job: ExportJob, float_layers: tuple[str, ...]):
    scheme = "u8s8"  # the x86 one (uint8 activations, int8 weights)
    method = job.options.get("calib_method", "minmax")
    opset = int(job.options.get("opset", DEFAULT_OPSET))
    proto, _ = build_onnx(job, "int8", scheme=scheme, method=method)
    return _from_onnx(proto, "Q/DQ int8"), {"opset": opset, "method": "qdq", "scheme": scheme, "calib_method": method}


def convert_int8(job: ExportJob) -> ModelMetadata:
    """Format ``openvino-int8``: ``method`` ``qdq`` (default) or ``nncf``, calibrated on ``job.calibration``."""
    method = job.options["method"]
    logits = ends_in_logits(job)
    float_layers = tuple(job.options.get("float_layers") or ())
    if method == "nncf":
        quantized, extra = _nncf_quantize(job, logits, float_layers)
        tools = (*OPENVINO_TOOLS, "nncf")
    else:
        quantized, extra = _qdq_quantize(job, float_layers)
        tools = (*OPENVINO_TOOLS, "onnxruntime")
    metadata = _metadata(job, job.format.name, "int8", tools, **extra, inference_precision="f32",
                         **calibration_extra(job, float_layers))
    metadata = metadata.replace(output_activation="linear" if logits else job.metadata.output_activation)
    return save_ir(quantized, metadata, job.output)


__all__ = ["convert_float", "convert_int8", "save_ir", "weights_path"]
