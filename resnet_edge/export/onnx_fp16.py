"""ONNX with fp16 weights and compute, fp32 inputs and outputs kept: the input TensorRT fp16 builds from."""

from __future__ import annotations

from .._lazy import lazy_import
from .._quiet import quiet
from ..errors import ExportError
from ..metadata import ModelMetadata, tool_versions
from . import ExportJob
from .onnx import ONNX_TOOLS, save_onnx, to_onnx_proto


def convert(job: ExportJob) -> ModelMetadata:
    float16 = lazy_import("onnxconverter_common.float16", extra="export")
    opset = int(job.options["opset"])
    job.progress(f"converting {job.metadata.model} to ONNX fp16 (opset {opset})")
    proto = to_onnx_proto(job.model, opset)
    try:
        with quiet():
            proto = float16.convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:
        raise ExportError(f"fp16 conversion failed: {type(exc).__name__}: {exc}"[:300]) from exc
    metadata = job.metadata.replace(format="onnx-fp16", precision="fp16",
                                    tools=tool_versions(*ONNX_TOOLS, "onnxconverter-common"),
                                    extra={"opset": opset})
    return save_onnx(proto, metadata, job.output)
