"""calibration/: the CalibrationSet's TFLite side (ranges recorded for the MLIR quantizer)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.backends.tflite.calibration import record_ranges, representative_dataset
from resnet_edge.calibration import CalibrationSet


@pytest.fixture(scope="module")
def small_calibration(digits) -> CalibrationSet:
    """20 images: two batches of the range recorder, the second one short."""
    with pytest.warns(UserWarning, match="recommended"):
        return CalibrationSet.from_dataset(digits, 20)


@pytest.fixture(scope="module")
def calibrated_model(trained_model, small_calibration) -> bytes:
    """The float model as TFLite's calibrator hands it to the quantizer (ranges from one image)."""
    from resnet_edge._quiet import quiet
    from resnet_edge.backends.tflite.convert import make_converter

    with quiet():
        return make_converter(trained_model, "int8", small_calibration).convert()


def _ranges(model: bytes) -> dict[str, tuple[float, float]]:
    from ai_edge_litert.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(model)).subgraphs[0]
    return {tensor.name.decode(): (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
            for tensor in graph.tensors
            if tensor.quantization is not None and tensor.quantization.min is not None
            and len(tensor.quantization.min)}


def _listed(values) -> list | None:
    return None if values is None else np.asarray(values).tolist()


def _true_ranges(model: bytes, images: np.ndarray, names) -> dict[str, tuple[float, float]]:
    """Every tensor's range, one image at a time with the reference kernels and nothing overwritten."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    low = dict.fromkeys(names, np.inf)
    high = dict.fromkeys(names, -np.inf)
    for image in images.astype(np.float32):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        for name in names:
            values = interpreter.get_tensor(index[name])
            low[name], high[name] = min(low[name], values.min()), max(high[name], values.max())
    return {name: (low[name], high[name]) for name in names}


@pytest.mark.parametrize(("count", "expected"), [(300, 6), (200, 8), (20, 5), (13, 1)])
def test_onnxrt_batches_divide_the_calibration_set(count, expected) -> None:
    from resnet_edge.interchange.calibration import even_batch_size

    calibration = CalibrationSet(np.zeros((count, 2, 2, 3), np.uint8), None, "test", batch_size=8)
    assert even_batch_size(calibration) == expected


def test_representative_dataset_yields_single_float_samples(small_calibration) -> None:
    samples = list(representative_dataset(small_calibration)())
    assert len(samples) == 20
    assert all(s[0].shape == (1, 32, 32, 3) and s[0].dtype == np.float32 for s in samples)
    assert len(list(representative_dataset(small_calibration, count=3)())) == 3


def test_recorded_ranges_are_every_tensors_true_range(calibrated_model, small_calibration) -> None:
    recorded = _ranges(record_ranges(calibrated_model, small_calibration))
    assert recorded.keys() == _ranges(calibrated_model).keys() and len(recorded) > 30
    truth = _true_ranges(calibrated_model, small_calibration.images, recorded)
    for name, (low, high) in recorded.items():
        np.testing.assert_allclose((low, high), truth[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_quantizing_the_same_ranges_gives_the_stock_converters_model(trained_model, small_calibration) -> None:
    """Our quantize step is TFLiteConverter's own: same ranges in, same tensors and weights out."""
    from ai_edge_litert.tools import flatbuffer_utils

    from resnet_edge._quiet import quiet
    from resnet_edge.backends.tflite.convert import make_converter, quantize

    stock = make_converter(trained_model, "int8", small_calibration)
    stock._experimental_calibrate_only = False
    with quiet():
        stock_model = stock.convert()
        calibrated = make_converter(trained_model, "int8", small_calibration).convert()
    ours = quantize(calibrated, "int8")
    models = [flatbuffer_utils.read_model_from_bytearray(bytearray(m)) for m in (stock_model, ours)]
    tensors = [[(t.name, t.type, _listed(t.shape), _listed(t.quantization and t.quantization.scale),
                 _listed(t.quantization and t.quantization.zeroPoint)) for t in m.subgraphs[0].tensors]
               for m in models]
    assert tensors[0] == tensors[1]
    weights = [[bytes(b.data) if b.data is not None else b"" for b in m.buffers] for m in models]
    metadata_buffers = [{e.buffer for e in m.metadata} for m in models]
    assert [w for i, w in enumerate(weights[0]) if i not in metadata_buffers[0]] == \
        [w for i, w in enumerate(weights[1]) if i not in metadata_buffers[1]]


@pytest.mark.parametrize("method", ["MinMax", "Entropy"])
def test_onnxrt_calibration_cache_holds_the_stock_calibrators_ranges(method, artifacts, small_calibration,
                                                                     tmp_path) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, load_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from resnet_edge.interchange.calibration import CalibrationReader, even_batch_size, write_calibration_cache

    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(artifacts["onnx"]), str(prepared))
    cache = tmp_path / "calibration.json"
    write_calibration_cache(prepared, small_calibration, "input", CalibrationMethod[method], cache)
    ours = load_tensors_data(cache)

    stock = create_calibrator(prepared, None, augmented_model_path=str(tmp_path / "augmented.onnx"),
                              calibrate_method=CalibrationMethod[method])
    stock.collect_data(CalibrationReader(small_calibration, "input", even_batch_size(small_calibration)))
    expected = stock.compute_data()
    assert ours.calibration_method == expected.calibration_method
    assert set(ours.keys()) == set(expected.keys()) and len(expected.keys()) > 30
    for name in expected:
        for bound in ("lowest", "highest"):
            np.testing.assert_allclose(getattr(ours[name], bound), getattr(expected[name], bound),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name} {bound}")
