"""ONNX Runtime static quantization (QDQ, per-channel int8 weights), calibrated on a CalibrationSet.

A classifier's final softmax is left out of the graph (it ends in float logits after the last DQ; the
Predictor applies the softmax) unless ``int8_softmax``; ``float_layers`` names Keras layers whose nodes
stay unquantized (the accuracy-budget fallback).

``scheme="u8s8"``: uint8 activations + int8 weights (U8S8), the combination ONNX Runtime fuses on x86.
``scheme="s8s8"``: symmetric int8 activations and weights, zero-points 0, float biases: what TensorRT's
explicit quantization takes, so the Q/DQ file is also the TensorRT int8 calibration cache.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._lazy import lazy_import
from .._quiet import quiet
from ..errors import ExportError, ResnetEdgeError
from ..runtime import ExportJob, ends_in_logits
from .keras_onnx import INPUT_NAME, to_logits_proto, to_onnx_proto


def quantize_onnx(source: Path, target: Path, job: ExportJob, scheme: str, method: str,
                  float_layers: tuple[str, ...] = ()) -> None:
    """Pre-process (shape inference, fusions) and statically quantize ``source`` into ``target``."""
    lazy_import("sympy", extra="export")  # quant_pre_process needs it; onnxruntime does not install it
    quantization = lazy_import("onnxruntime.quantization", extra="export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .calibration import write_calibration_cache

    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    symmetric = scheme == "s8s8"
    prepared, cache = source.with_name("prepared.onnx"), source.with_name("calibration.json")
    try:
        with quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            write_calibration_cache(prepared, job.calibration, INPUT_NAME, methods[method], cache)
        excluded = nodes_of_layers(prepared, job.model, float_layers) if float_layers else None
        quantization.quantize_static(
            str(prepared),
            str(target),
            calibration_cache_path=str(cache),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QInt8 if symmetric else quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric},
        )
    except (ResnetEdgeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {exc}"[:300]) from exc


def nodes_of_layers(path: Path, model, float_layers: tuple[str, ...]) -> list[str]:
    """Names of the nodes of the ONNX at ``path`` that compute the given Keras layers."""
    from ..models.naming import keras_layers, layer_of

    onnx = lazy_import("onnx", extra="export")
    layers = keras_layers(model)
    wanted = set(float_layers)
    return [node.name for node in onnx.load(str(path)).graph.node
            if any(layer_of(name, layers) in wanted for name in node.output)]


@contextlib.contextmanager
def qdq_onnx(job: ExportJob, scheme: str, method: str, float_layers: tuple[str, ...]) -> Iterator[Path]:
    """The calibrated Q/DQ ONNX of ``job.model`` in a temporary folder (logits out unless ``int8_softmax``):
    this format's file, and what ``openvino-int8 --method qdq`` converts."""
    onnx = lazy_import("onnx", extra="export")
    opset = int(job.options.get("opset", 17))
    job.progress(f"converting {job.metadata.model} to ONNX (opset {opset})")
    proto = to_logits_proto(job.model, opset) if ends_in_logits(job) else to_onnx_proto(job.model, opset)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-int8-") as workdir:
        source, target = Path(workdir) / "fp32.onnx", Path(workdir) / "int8.onnx"
        onnx.save(proto, str(source))
        job.progress(f"calibrating Q/DQ int8 ({scheme} scheme, {method}) on {len(job.calibration)} images")
        quantize_onnx(source, target, job, scheme, method, float_layers)
        yield target
