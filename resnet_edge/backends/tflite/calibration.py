"""TFLite calibration over a CalibrationSet: the representative-dataset generator, a fast range recorder (the MLIR
route) and LiteRT Quantizer's calibration with true min/max ranges (the LiteRT Quantizer route)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...calibration import CalibrationSet
from ...errors import ExportError

RANGE_BATCH_BYTES = 512 * 2**20
MAX_RANGE_BATCH = 16
LITERT_BATCH = 8  # images per LiteRT Quantizer calibration step (ResNet-50 @224: about 0.8 GiB peak in all)


def representative_dataset(calibration: CalibrationSet,
                           count: int | None = None) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The callable ``TFLiteConverter.representative_dataset`` expects: one float32 sample per step."""

    def generate() -> Iterator[list[np.ndarray]]:
        for index, batch in enumerate(calibration.batches(batch_size=1)):
            if count is not None and index >= count:
                return
            yield [batch]

    return generate


def record_ranges(calibrated: bytes, calibration: CalibrationSet, threads: int | None = None) -> bytes:
    """Rewrite the min/max of every calibrated tensor with its range over the whole calibration set.

    ``calibrated`` is the float model TFLite's calibrator returns (``_experimental_calibrate_only``);
    the result is what its MLIR quantizer takes. TFLite's own calibrator runs the reference kernels on
    one thread (about 0.3 s per ResNet-50 @224 image on this machine's CPUs) and logs an op's inputs
    again after the op ran, so a tensor an in-place op overwrote (the conv feeding a residual Add) gets
    the Add's maximum (tensorflow/tensorflow#127842). Here the float model runs under XNNPACK, batched,
    with every calibrated tensor made a graph output, and each range is the true one.
    """
    from ...cpu import usable_cores

    flatbuffer_utils = lazy_import("ai_edge_litert.tools.flatbuffer_utils", extra="tflite")
    interpreter_module = lazy_import("ai_edge_litert.interpreter", extra="tflite")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    if len(model.subgraphs) != 1:
        raise ExportError(f"TFLite int8 calibration expects one subgraph, the model has {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    (input_index,) = (int(i) for i in graph.inputs)
    produced = {int(i) for op in graph.operators for i in op.outputs}
    tracked = [index for index, tensor in enumerate(graph.tensors) if _has_range(tensor) and index != input_index]
    unreachable = [graph.tensors[i].name.decode() for i in tracked if i not in produced]
    if unreachable:
        raise ExportError(f"TFLite int8 calibration: no op produces the calibrated tensor {unreachable[0]!r}")

    original_outputs = [int(i) for i in graph.outputs]
    graph.outputs = np.array(original_outputs + [i for i in tracked if i not in original_outputs], dtype=np.int32)
    probe = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    graph.outputs = np.array(original_outputs, dtype=np.int32)

    with quiet():
        interpreter = interpreter_module.Interpreter(model_content=probe, num_threads=threads or usable_cores())
    image_bytes = sum(4 * int(np.prod(graph.tensors[i].shape[1:])) for i in tracked)
    batch_size = int(np.clip(RANGE_BATCH_BYTES // max(image_bytes, 1), 1, MAX_RANGE_BATCH))
    low = np.full(len(tracked), np.inf)
    high = np.full(len(tracked), -np.inf)
    input_low, input_high = np.inf, -np.inf
    shape = None
    for batch in calibration.batches(batch_size=batch_size):
        if batch.shape != shape:
            with quiet():
                interpreter.resize_tensor_input(input_index, batch.shape)
                interpreter.allocate_tensors()
            shape = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        for slot, index in enumerate(tracked):
            values = interpreter.tensor(index)()
            low[slot] = min(low[slot], values.min())
            high[slot] = max(high[slot], values.max())
        del values  # a view into the interpreter blocks the next invoke()
        input_low, input_high = min(input_low, batch.min()), max(input_high, batch.max())
    if shape is None:
        raise ExportError("TFLite int8 calibration needs at least one calibration image")

    ranges = dict(zip(tracked, zip(low, high, strict=True), strict=True))
    if _has_range(graph.tensors[input_index]):
        ranges[input_index] = (input_low, input_high)
    for index, (minimum, maximum) in ranges.items():
        quantization = graph.tensors[index].quantization
        quantization.min = np.array([minimum], dtype=np.float32)
        quantization.max = np.array([maximum], dtype=np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def litert_ranges(float_model: bytes, calibration: CalibrationSet,
                  threads: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every tensor's min/max over the whole calibration set, as LiteRT Quantizer's ``quantize()`` takes them.

    The float model runs under XNNPACK with LiteRT's profiler recording each tensor's range, in batches of
    ``LITERT_BATCH``. Ranges are merged as true min/max: ``Quantizer.calibrate()`` would merge them as a moving
    average (0.95 of the old range per batch), which makes them depend on batch size and image order (measured on
    the digits ResNet-18 with one image per step: cosine 0.9968, against 0.99988 with min/max). The batches are
    fed one at a time, so the set is never held in float32 all at once. Every tensor's range is recorded (the
    profiler records them all); which ones are used is the quantizer's recipe's business.
    """
    from ...cpu import usable_cores

    calibrator = lazy_import("litert_quantizer.calibrator", extra="tflite")
    recipe_manager = lazy_import("litert_quantizer.recipe_manager", extra="tflite")
    recipes = lazy_import("litert_quantizer.recipe", extra="tflite")
    qsv_utils = lazy_import("litert_quantizer.utils.qsv_utils", extra="tflite")
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipes.static_wi8_ai8())
    with quiet():
        recorder = calibrator.Calibrator(float_model, num_threads=threads or usable_cores(),
                                         mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
                                         qsv_update_func=qsv_utils.min_max_update)
    signatures = recorder.get_signature_list()
    if len(signatures) != 1 or len(next(iter(signatures.values()))["inputs"]) != 1:
        raise ExportError(f"TFLite int8 calibration expects one signature with one input, the model has {signatures}")
    ((key, signature),) = signatures.items()
    (input_name,) = signature["inputs"]
    steps = 0
    for batch in calibration.batches(batch_size=LITERT_BATCH):
        with quiet():  # a progress bar per call
            recorder.calibrate({key: [{input_name: batch}]}, manager)
        steps += 1
    if not steps:
        raise ExportError("TFLite int8 calibration needs at least one calibration image")
    return recorder.get_model_qsvs()


def _has_range(tensor) -> bool:
    return tensor.quantization is not None and tensor.quantization.min is not None and len(tensor.quantization.min) > 0
