"""The ONNX formats ONNX Runtime runs: fp32, fp16 (fp32 inputs and outputs kept) and static Q/DQ int8.

The files are made once, by the shared ONNX route (``resnet_edge.interchange``), which other runtimes build
from too; here they are written as this runtime's artifacts.
"""

from __future__ import annotations

from ...interchange import build_onnx, save_onnx
from ...metadata import ModelMetadata
from ...runtime import ExportJob


def convert_fp32(job: ExportJob) -> ModelMetadata:
    return save_onnx(*build_onnx(job, "fp32"), job.output)


def convert_fp16(job: ExportJob) -> ModelMetadata:
    return save_onnx(*build_onnx(job, "fp16"), job.output)


def convert_int8(job: ExportJob) -> ModelMetadata:
    proto, metadata = build_onnx(job, "int8", scheme=job.options["scheme"], method=job.options["calib_method"])
    return save_onnx(proto, metadata, job.output)
