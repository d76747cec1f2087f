"""ONNX fp32 through tf2onnx (opset 13-18, dynamic batch), and the shared ONNX save/check step."""

from __future__ import annotations

from pathlib import Path

from .. import artifact
from .._lazy import import_tensorflow, lazy_import
from .._quiet import quiet
from ..errors import ExportError, InvalidArgumentError
from ..metadata import ModelMetadata, tool_versions
from . import ExportJob

OPSETS = range(13, 19)
INPUT_NAME = "input"
ONNX_TOOLS = ("resnet-edge", "tensorflow", "keras", "tf2onnx", "onnx")


def to_onnx_proto(model, opset: int):
    """The Keras model as an fp32 ``onnx.ModelProto`` with input ``input`` (N, H, W, C) and dynamic N."""
    if opset not in OPSETS:
        raise InvalidArgumentError(f"opset must be between {OPSETS.start} and {OPSETS.stop - 1}, got {opset}")
    tf = import_tensorflow()
    tf2onnx = lazy_import("tf2onnx", extra="export")
    # tf2onnx numbers inserted nodes from a process-wide counter; reset it so files are reproducible.
    tf2onnx.utils.INTERNAL_NAME = 1
    height, width, channels = (int(v) for v in model.input_shape[1:])
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    try:
        with quiet():
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert {model.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return proto


def save_onnx(proto, metadata: ModelMetadata, path: Path) -> ModelMetadata:
    """Embed metadata, run the full ONNX checker, and write ``path``."""
    onnx = lazy_import("onnx", extra="export")
    artifact.embed_onnx(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {str(exc).splitlines()[0][:200]}") from exc
    onnx.save(proto, str(path))
    return metadata


def convert(job: ExportJob) -> ModelMetadata:
    opset = int(job.options["opset"])
    job.progress(f"converting {job.metadata.model} to ONNX (opset {opset})")
    proto = to_onnx_proto(job.model, opset)
    metadata = job.metadata.replace(format="onnx", precision="fp32", tools=tool_versions(*ONNX_TOOLS),
                                    extra={"opset": opset})
    return save_onnx(proto, metadata, job.output)
