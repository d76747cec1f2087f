"""ONNX, the interchange format several runtimes build from: Keras to ONNX (tf2onnx), fp16, and Q/DQ int8.

ONNX Runtime runs these files as they are; OpenVINO converts the Q/DQ file (``openvino-int8 --method qdq``),
TensorRT builds its strongly typed engines from them (fp16 from the fp16 file, int8 from the symmetric Q/DQ
file), NCNN converts the fp32 file with pnnx. Written once here, so the runtime folders stay independent.
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_import
from .._quiet import quiet
from ..errors import ExportError, InvalidArgumentError
from ..metadata import ModelMetadata, tool_versions
from ..runtime import ExportJob, calibration_extra, ends_in_logits
from .keras_onnx import INPUT_NAME, ONNX_TOOLS, embed_metadata, save_onnx, to_logits_proto, to_onnx_proto

PRECISIONS = ("fp32", "fp16", "int8")
QDQ_TOOLS = (*ONNX_TOOLS, "onnxruntime")  # the Q/DQ file is calibrated and quantized by onnxruntime's quantizer
SCHEMES = ("u8s8", "s8s8")


def build_onnx(job: ExportJob, precision: str, *, scheme: str = "u8s8", method: str = "minmax") -> tuple[Any, ModelMetadata]:
    """The job's model as an in-memory ONNX at ``precision``, and the metadata that goes with it.

    fp32: tf2onnx with a dynamic batch. fp16: fp16 weights and compute, fp32 inputs and outputs kept. int8: static
    Q/DQ, per-channel int8 weights, activations uint8 (``scheme="u8s8"``, what ONNX Runtime fuses on x86) or
    symmetric int8 (``"s8s8"``, what TensorRT's explicit quantization takes), calibrated on ``job.calibration``
    by ``method``; a classifier's softmax stays out of the integer graph (logits out) unless ``int8_softmax``, and
    ``float_layers`` stay unquantized.
    """
    onnx = lazy_import("onnx", extra="export")
    opset = int(job.options.get("opset", 17))
    extra: dict[str, Any] = {"opset": opset}
    tools = ONNX_TOOLS
    activation = job.metadata.output_activation
    if precision == "fp32":
        job.progress(f"converting {job.metadata.model} to ONNX (opset {opset})")
        proto = to_onnx_proto(job.model, opset)
    elif precision == "fp16":
        float16 = lazy_import("onnxconverter_common.float16", extra="export")
        job.progress(f"converting {job.metadata.model} to ONNX fp16 (opset {opset})")
        try:
            with quiet():
                proto = to_onnx_proto(job.model, opset)
                # the layout Transposes tf2onnx puts before a feature map's output stay float: converted, their
                # declared output type (float) and the inferred one (float16) disagree and the checker refuses it
                outputs = {o.name for o in proto.graph.output}
                last = [n.name for n in proto.graph.node if set(n.output) & outputs and n.op_type == "Transpose"]
                proto = float16.convert_float_to_float16(proto, keep_io_types=True, node_block_list=last or None)
        except Exception as exc:
            raise ExportError(f"fp16 conversion failed: {type(exc).__name__}: {exc}"[:300]) from exc
        tools = (*ONNX_TOOLS, "onnxconverter-common")
    elif precision == "int8":
        from .qdq import qdq_onnx

        if scheme not in SCHEMES:
            raise InvalidArgumentError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
        float_layers = tuple(job.options.get("float_layers") or ())
        with qdq_onnx(job, scheme, method, float_layers) as target:
            proto = onnx.load(str(target))
        if ends_in_logits(job):
            activation = "linear"
        extra.update(scheme=scheme, calib_method=method, **calibration_extra(job, float_layers))
        tools = QDQ_TOOLS
    else:
        raise InvalidArgumentError(f"ONNX precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    metadata = job.metadata.replace(format=job.format.name, precision=precision, tools=tool_versions(*tools),
                                    output_activation=activation, extra=extra)
    return proto, metadata


def fold_constants(proto: Any) -> Any:
    """The ONNX with its constant subgraphs folded and batch norms fused into the convolutions (ONNX Runtime's
    offline *basic* optimizations, which emit standard ONNX only): tf2onnx leaves a trained model's batch norms as
    Mul/Add pairs, which a converter to another runtime then carries as separate layers."""
    onnx = lazy_import("onnx", extra="export")
    ort = lazy_import("onnxruntime", extra="export")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="resnet-edge-fold-") as workdir:
        source, target = Path(workdir) / "model.onnx", Path(workdir) / "folded.onnx"
        onnx.save(proto, str(source))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        options.log_severity_level = 3
        try:
            with quiet():
                ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"ONNX constant folding failed: {type(exc).__name__}: {exc}"[:300]) from exc
        return onnx.load(str(target))


__all__ = ["INPUT_NAME", "ONNX_TOOLS", "PRECISIONS", "SCHEMES", "build_onnx", "embed_metadata", "fold_constants", "save_onnx",
           "to_logits_proto", "to_onnx_proto"]
