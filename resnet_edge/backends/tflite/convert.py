"""TFLite float32, float16-weight and full-integer int8 models through ``TFLiteConverter.from_keras_model``.

(``from_concrete_functions`` once produced a variable-weight file that returned NaN: see DESIGN.md.)
int8 has two quantizers (``quantizer``), both given the true min/max of every tensor over the whole calibration
set, both writing per-channel int8 weights and int8 activations with int8 (or uint8) input and output:

* ``litert`` (the default): LiteRT Quantizer (``litert-quantizer``, recipe ``static_wi8_ai8``) quantizes the
  float ``.tflite`` the converter writes; no TensorFlow-private entry point, and the quantization step itself
  needs no TensorFlow. It measured as good as ``mlir`` and cheaper (benchmarks/README.md, "TFLite int8: which
  quantizer").
* ``mlir``: the converter's calibrated float model, ranges recorded with ``calibration.record_ranges`` and
  quantized by the converter's own MLIR quantizer (``mlir_quantize``, a private TensorFlow function): the file
  the stock path writes from the same ranges, without TFLite's in-place range bug.

A classifier's final softmax is cut off before conversion (int8 logits come out with their own scale) unless
``int8_softmax``; ``float_layers`` names Keras layers whose ops the quantizer leaves in float.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

from ..._lazy import import_tensorflow, lazy_import
from ..._memo import KeepLast
from ..._quiet import quiet
from ...errors import ExportError, InvalidArgumentError, MissingDependencyError, ResnetEdgeError
from ...metadata import ModelMetadata, tool_versions
from ...runtime import ExportJob, calibration_extra, ends_in_logits
from .backend import tensor_quantization
from .container import embed_tflite

IO_TYPES = ("int8", "uint8")
QUANTIZERS = ("litert", "mlir")  # the first is the default (benchmarks/README.md, "TFLite int8: which quantizer")
LITERT_INSTALL = "pip install 'resnet-edge[tflite]'"

_float_models = KeepLast()  # the last float .tflite LiteRT Quantizer started from (the --max-drop rounds reuse it)


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


def require_litert_quantizer() -> None:
    """LiteRT Quantizer importable, or a one-line error naming the install line (checked before any work)."""
    try:
        importlib.import_module("litert_quantizer.quantizer")
    except ImportError as exc:
        raise MissingDependencyError(
            f"tflite-int8 --quantizer litert needs LiteRT Quantizer ({exc.name or 'litert_quantizer'} missing): "
            f"{LITERT_INSTALL} (or export with --quantizer mlir)") from exc


def float_tflite(model) -> bytes:
    """The Keras model as a float32 ``.tflite``; the last one is kept, so rebuilding an int8 file from the same model
    (the ``--max-drop`` rounds, each with more layers float) converts it once."""
    from ...models.reference import model_digest

    def build() -> bytes:
        with quiet():
            return make_converter(model, "fp32").convert()

    return _float_models.get(model_digest(model), build)


def litert_quantize(float_model: bytes, calibration, io_type: str = "int8", keep_float: Sequence[str] = (),
                    threads: int | None = None) -> bytes:
    """Full-integer int8 by LiteRT Quantizer: int8 activations (per tensor, asymmetric), int8 weights per channel.

    ``keep_float`` are output tensor names whose ops stay float (a DEQUANTIZE before them, a QUANTIZE after; the
    last op kept float makes the output float32); ``io_type`` uint8 puts uint8<->int8 QUANTIZE ops at the edges.
    """
    from .calibration import litert_ranges

    if io_type not in IO_TYPES:
        raise InvalidArgumentError(f"--io must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
    require_litert_quantizer()
    quantizer = importlib.import_module("litert_quantizer.quantizer")
    recipes = importlib.import_module("litert_quantizer.recipe")
    qtyping = importlib.import_module("litert_quantizer.qtyping")
    algorithms = importlib.import_module("litert_quantizer.algorithm_manager")

    job = quantizer.Quantizer(float_model)
    job.load_quantization_recipe(recipes.static_wi8_ai8())
    for name in keep_float:  # matched against an op's output names joined by ";", plus a final ";"
        job.update_quantization_recipe(regex=f"^{re.escape(name)};$",
                                       operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       algorithm_key=algorithms.AlgorithmName.NO_QUANTIZE)
    if io_type == "uint8":
        edge = qtyping.OpQuantizationConfig(
            activation_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=8, symmetric=False, dtype=qtyping.TensorDataType.UINT),
            compute_precision=qtyping.ComputePrecision.INTEGER)
        for operation in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            job.update_quantization_recipe(regex=".*", operation_name=operation, op_config=edge)
    ranges = litert_ranges(float_model, calibration, threads)
    with quiet():
        result = job.quantize(calibration_result=ranges, enable_progress_report=False)
    return bytes(result.quantized_model)


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
    quantizer = (job.options.get("quantizer") or QUANTIZERS[0]) if precision == "int8" else None
    if quantizer == "litert":
        require_litert_quantizer()
    logits = ends_in_logits(job)
    source = logits_model(job.model) if logits else job.model
    job.progress(f"converting {job.metadata.model} to {job.format.name}")
    try:
        if precision == "fp32":
            flatbuffer = float_tflite(source)
        elif quantizer == "litert":
            float_model = float_tflite(source)
            job.progress(f"calibrating and quantizing with LiteRT Quantizer on {len(job.calibration)} images")
            keep_float = ops_of_layers(float_model, job.model, float_layers) if float_layers else ()
            flatbuffer = litert_quantize(float_model, job.calibration, io_type, keep_float)
        else:
            converter = make_converter(source, precision, job.calibration, io_type)
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
        tools=tool_versions("resnet-edge", "tensorflow", "keras", "ai-edge-litert",
                            *(("litert-quantizer",) if quantizer == "litert" else ())),
        extra={"calib_method": "minmax", "quantizer": quantizer, **calibration_extra(job, float_layers)}
        if precision == "int8" else {},
    )
    job.output.write_bytes(embed_tflite(flatbuffer, metadata))
    return metadata
