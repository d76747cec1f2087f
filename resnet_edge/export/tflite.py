"""TFLite float32, float16-weight and full-integer int8 models through ``TFLiteConverter.from_keras_model``.

(``from_concrete_functions`` once produced a variable-weight file that returned NaN: see DESIGN.md.)
"""

from __future__ import annotations

from .. import artifact
from .._lazy import import_tensorflow, lazy_import
from .._quiet import quiet
from ..errors import ExportError, InvalidArgumentError
from ..metadata import ModelMetadata, tool_versions
from ..runtime.tflite import tensor_quantization
from . import ExportJob

IO_TYPES = ("int8", "uint8")


def convert(job: ExportJob) -> ModelMetadata:
    tf = import_tensorflow()
    from calibration.tflite import representative_dataset

    precision = job.format.precision
    converter = tf.lite.TFLiteConverter.from_keras_model(job.model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        io_type = job.options["io"]
        if io_type not in IO_TYPES:
            raise InvalidArgumentError(f"--io must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(job.calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
        job.progress(f"calibrating TFLite int8 on {len(job.calibration)} images")
    job.progress(f"converting {job.metadata.model} to {job.format.name}")
    try:
        with quiet():
            flatbuffer = converter.convert()
    except Exception as exc:
        raise ExportError(f"TFLite conversion failed: {type(exc).__name__}: {str(exc)[:200]}") from exc

    interpreter = lazy_import("ai_edge_litert.interpreter", extra="tflite").Interpreter(model_content=flatbuffer)
    (model_input,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    metadata = job.metadata.replace(
        format=job.format.name,
        precision=precision,
        input_dtype=model_input["dtype"].__name__,
        input_quantization=tensor_quantization(model_input),
        output_quantization=tensor_quantization(outputs[0]) if len(outputs) == 1 else None,
        tools=tool_versions("resnet-edge", "tensorflow", "keras", "ai-edge-litert"),
        extra={"calibration_images": len(job.calibration), "calibration_source": job.calibration.source}
        if precision == "int8" else {},
    )
    job.output.write_bytes(artifact.embed_tflite(flatbuffer, metadata))
    return metadata
