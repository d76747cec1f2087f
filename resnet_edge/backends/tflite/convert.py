"""TFLite float32, float16-weight and full-integer int8 models through ``TFLiteConverter.from_keras_model``.

(``from_concrete_functions`` once produced a variable-weight file that returned NaN: see DESIGN.md.)
int8 takes the converter's calibrated float model, records the ranges with ``calibration.tflite`` and
quantizes with the converter's own MLIR quantizer: the same file the stock path writes from the same
ranges, several times faster, without TFLite's in-place range bug. A classifier's final softmax is cut
off before conversion (int8 logits come out with their own scale) unless ``int8_softmax``; ``float_layers``
names Keras layers whose ops the quantizer leaves in float.
"""

from __future__ import annotations

from ..._lazy import import_tensorflow, lazy_import
from ..._quiet import quiet
from ...errors import ExportError, InvalidArgumentError, ResnetEdgeError
from ...metadata import ModelMetadata, tool_versions
from ...runtime import ExportJob, calibration_extra, ends_in_logits
from .backend import tensor_quantization
from .container import embed_tflite

IO_TYPES = ("int8", "uint8")


def make_converter(model, precision: str, calibration=None, io_type: str = "int8"):
    """The ``TFLiteConverter`` for a precision; for int8 it stops at the calibrated float model.

    The converter calibrates on one image only: ``record_ranges`` then measures the whole set and
    ``quantize`` finishes what ``convert()`` would have done.
    """
    tf = import_tensorflow()
    from .calibration import representative_dataset

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if io_type not in IO_TYPES:
            raise InvalidArgumentError(f"--io must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration, count=1)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
        converter._experimental_calibrate_only = True
    return converter


def quantize(calibrated: bytes, io_type: str, denylisted: list[str] | None = None) -> bytes:
    """What ``TFLiteConverter.convert`` does with a calibrated model: MLIR quantization, shared buffers merged.

    ``denylisted`` output tensor names keep their ops in float (the quantizer's selective quantization).
    """
    tf = import_tensorflow()
    try:
        from tensorflow.lite.python.convert import deduplicate_readonly_buffers, mlir_quantize
    except ImportError as exc:
        raise ExportError(f"this TensorFlow has no TFLite MLIR quantizer entry point ({exc}); "
                          "install a tensorflow version within the range pyproject.toml gives") from exc
    with quiet():
        quantized = mlir_quantize(calibrated, disable_per_channel=False, input_data_type=getattr(tf, io_type),
                                  output_data_type=getattr(tf, io_type), denylisted_nodes=denylisted or None)
    return deduplicate_readonly_buffers(quantized)


def ops_of_layers(flatbuffer: bytes, model, float_layers: tuple[str, ...]) -> list[str]:
    """Output tensor names of the ops in ``flatbuffer`` that compute the given Keras layers."""
    from ...models.naming import keras_layers, layer_of

    flatbuffer_utils = lazy_import("ai_edge_litert.tools.flatbuffer_utils", extra="tflite")
    layers, wanted = keras_layers(model), set(float_layers)
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer)).subgraphs[0]
    produced = sorted({int(i) for op in graph.operators for i in op.outputs})
    names = [graph.tensors[i].name.decode() for i in produced]
    return [name for name in names if layer_of(name, layers) in wanted]


def convert(job: ExportJob) -> ModelMetadata:
    from ...models.resnet import logits_model
    from .calibration import record_ranges

    precision = job.format.precision
    io_type = job.options.get("io", "int8")
    float_layers = tuple(job.options.get("float_layers") or ())
    logits = ends_in_logits(job)
    source = logits_model(job.model) if logits else job.model
    converter = make_converter(source, precision, job.calibration, io_type)
    job.progress(f"converting {job.metadata.model} to {job.format.name}")
    try:
        with quiet():
            flatbuffer = converter.convert()
        if precision == "int8":
            job.progress(f"calibrating TFLite int8 on {len(job.calibration)} images")
            calibrated = record_ranges(flatbuffer, job.calibration)
            denylisted = ops_of_layers(calibrated, job.model, float_layers) if float_layers else None
            flatbuffer = quantize(calibrated, io_type, denylisted)
    except ResnetEdgeError:
        raise
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
        output_activation="linear" if logits else job.metadata.output_activation,
        tools=tool_versions("resnet-edge", "tensorflow", "keras", "ai-edge-litert"),
        extra={"calib_method": "minmax", **calibration_extra(job, float_layers)} if precision == "int8" else {},
    )
    job.output.write_bytes(embed_tflite(flatbuffer, metadata))
    return metadata
