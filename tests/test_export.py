"""Every CPU format end to end: export, plain-runtime load, parity, metadata, atomicity, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.errors import InvalidArgumentError, ParityError
from resnet_edge.exporter import FORMATS, export, find_format
from resnet_edge.metadata import ModelMetadata
from resnet_edge.parity import TOLERANCES, compare_outputs

CPU_FORMATS = tuple(name for name, fmt in FORMATS.items() if fmt.runs_on_cpu)
ALL_CPU = (*CPU_FORMATS, "onnx-int8-s8s8")


def _plain_onnxruntime(path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    return session.run(None, {model_input.name: images.astype(np.float32)})[0]


def _plain_tflite(path, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    scale, zero = detail["quantization"]
    batch = images.astype(np.float32)
    if detail["dtype"] != np.float32:
        batch = np.clip(np.rint(batch / scale + zero), -128, 127).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], batch)
    interpreter.invoke()
    output = interpreter.get_output_details()[0]
    result = interpreter.get_tensor(output["index"]).astype(np.float32)
    if output["dtype"] != np.float32:
        out_scale, out_zero = output["quantization"]
        result = (result - out_zero) * out_scale
    return result


def _plain_openvino(path, images: np.ndarray) -> np.ndarray:
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    model.reshape([-1, *images.shape[1:]])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(images.astype(np.float32))[0]


def _plain_ncnn(path, images: np.ndarray) -> np.ndarray:
    import ncnn

    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(path)) == 0 and net.load_model(str(path.with_suffix(".bin"))) == 0
    rows = []
    for image in images.astype(np.float32):
        with net.create_extractor() as extractor:
            extractor.input("in0", ncnn.Mat(np.ascontiguousarray(image)).clone())
            rows.append(np.array(extractor.extract("out0")[1]))
    return np.stack(rows)


PLAIN_RUNTIMES = {"onnxruntime": _plain_onnxruntime, "tflite": _plain_tflite, "openvino": _plain_openvino,
                  "ncnn": _plain_ncnn}


def plain_runtime_outputs(path, images: np.ndarray, fmt: str) -> tuple[np.ndarray, ModelMetadata | None]:
    """Run an artifact with the runtime's own API only (no resnet_edge runtime code)."""
    from resnet_edge.artifact import read_metadata

    return PLAIN_RUNTIMES[FORMATS[fmt].backend](path, images), read_metadata(path)


def test_every_cpu_backend_has_a_plain_runtime_check() -> None:
    assert {FORMATS[name].backend for name in CPU_FORMATS} <= set(PLAIN_RUNTIMES)


@pytest.mark.parametrize("name", ALL_CPU)
def test_artifact_matches_keras_with_plain_runtime(name, artifacts, trained_model, calibration_set) -> None:
    from resnet_edge.models.resnet import logits_model

    held_out = calibration_set.holdout.sample(400, seed=5)
    precision = FORMATS[name.removesuffix("-s8s8")].precision
    logits = precision == "int8"  # int8 artifacts end in logits; the softmax runs in float on the host
    reference_model = logits_model(trained_model) if logits else trained_model
    reference = reference_model.predict(held_out.images.astype(np.float32), verbose=0)
    outputs, metadata = plain_runtime_outputs(artifacts[name], held_out.images, name.removesuffix("-s8s8"))
    report = compare_outputs([reference], [outputs], precision, held_out.labels, name, logits=logits)
    assert report, report.line()
    if precision == "int8":
        assert report.top1_agreement >= 0.99 and report.compared == "logits"
    assert metadata.precision == precision and metadata.labels == tuple(str(i) for i in range(10))
    assert metadata.input_shape == (32, 32, 3) and metadata.preprocessing == "scale"
    assert metadata.output_activation == ("linear" if logits else "softmax")
    assert len(metadata.source_sha256) == 64 and "resnet-edge" in metadata.tools


def test_tflite_int8_takes_integer_input_and_records_its_quantization(artifacts) -> None:
    from resnet_edge.backends.tflite import container as tflite_container

    metadata = tflite_container.read_tflite(artifacts["tflite-int8"])
    assert metadata.input_dtype == "int8"
    assert metadata.input_quantization.scale == pytest.approx(1.0, rel=0.02)
    assert metadata.output_quantization is not None


def test_tflite_int8_with_uint8_io_takes_camera_bytes_as_they_are(tmp_path, trained_model_path,
                                                                   calibration_set) -> None:
    result = export(trained_model_path, "tflite-int8", tmp_path / "m.tflite", calibration=calibration_set,
                    io="uint8")
    assert result.parity and result.parity.top1_agreement >= 0.99
    assert result.metadata.input_dtype == "uint8"
    assert result.metadata.input_quantization.scale == pytest.approx(1.0, rel=0.02)
    assert result.metadata.input_quantization.zero_point == 0


def test_trt_scheme_is_symmetric_int8(artifacts) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(artifacts["onnx-int8-s8s8"]))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in initializers]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    cpu = onnx.load(str(artifacts["onnx-int8"]))
    cpu_types = {numpy_helper.to_array(i).dtype for i in cpu.graph.initializer if i.name.endswith("zero_point")}
    assert np.dtype(np.uint8) in cpu_types


def test_onnx_passes_the_full_checker_and_has_dynamic_batch(artifacts) -> None:
    import onnx

    for name in ("onnx", "onnx-fp16", "onnx-int8"):
        model = onnx.load(str(artifacts[name]))
        onnx.checker.check_model(model, full_check=True)
        batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx", "tflite", "tflite-int8", "onnx-int8"])
def test_exports_are_reproducible(name, tmp_path, trained_model_path, calibration_set) -> None:
    suffix = FORMATS[name].suffix
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    import resnet_edge.exporter as export_module
    import resnet_edge.interchange.keras_onnx as onnx_export

    export(trained_model_path, name, first, calibration=calibration_set, verify=False)
    onnx_export._converted.clear()  # load and convert again rather than reuse the cached model and conversion
    export_module._loaded.clear()
    export(trained_model_path, name, second, calibration=calibration_set, verify=False)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_methods_export_with_the_default_300_images(method, tmp_path, trained_model_path,
                                                                         digits) -> None:
    """300 is not a multiple of the batch: ONNX Runtime's histogram calibrators failed on the short last one."""
    from resnet_edge.calibration import CalibrationSet

    calibration = CalibrationSet.from_dataset(digits, 300)
    result = export(trained_model_path, "onnx-int8", tmp_path / "m.onnx", calibration=calibration,
                    calib_method=method)
    assert result.parity and result.parity.top1_agreement >= 0.99
    assert result.metadata.extra["calib_method"] == method


def test_verification_prints_and_returns_a_parity_report(tmp_path, trained_model_path, calibration_set) -> None:
    lines = []
    result = export(trained_model_path, "tflite", tmp_path / "m.tflite", calibration=calibration_set,
                    progress=lines.append)
    assert result.parity and result.parity.samples == 500
    assert any(line.startswith("tflite: PASS") for line in lines)
    assert result.summary()["parity"]["passed"] is True


def test_formats_exported_from_one_file_load_it_and_run_the_reference_once(tmp_path, trained_model_path,
                                                                          calibration_set, monkeypatch) -> None:
    import os

    import resnet_edge.exporter as export_module
    import resnet_edge.parity as parity
    from resnet_edge._memo import KeepLast, PerModel
    from resnet_edge.models import io

    loads = []
    monkeypatch.setattr(export_module, "_loaded", KeepLast())
    monkeypatch.setattr(parity, "_reference", PerModel(max_bytes=2**30))
    monkeypatch.setattr(io, "load_model", lambda path, real=io.load_model: loads.append(path) or real(path))
    export(trained_model_path, "onnx", tmp_path / "m.onnx", calibration=calibration_set)
    model = export_module._loaded.last[0]
    kept = parity._reference.entries(model)
    export(trained_model_path, "tflite", tmp_path / "m.tflite", calibration=calibration_set)
    again = parity._reference.entries(model)
    assert len(loads) == 1 and kept and all(a is b for a, b in zip(again, kept, strict=True))

    stat = trained_model_path.stat()
    os.utime(trained_model_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the file changed
    export(trained_model_path, "tflite", tmp_path / "m2.tflite", calibration=calibration_set)
    reloaded = export_module._loaded.last[0]
    assert len(loads) == 2 and reloaded is not model and len(parity._reference.entries(reloaded)) == len(kept)


def test_artifact_outside_tolerance_fails_and_leaves_nothing(tmp_path, trained_model_path, monkeypatch) -> None:
    import resnet_edge.parity as parity

    monkeypatch.setitem(parity.TOLERANCES, "fp16", parity.Tolerance(atol=0.0, rtol=0.0, min_top1=1.0, min_cosine=1.0))
    target = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match="onnx-fp16: FAIL"):
        export(trained_model_path, "onnx-fp16", target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_interrupted_export_leaves_no_file(tmp_path, trained_model_path, monkeypatch, interruption) -> None:
    import resnet_edge.backends.onnxruntime.convert as onnx_export

    original = onnx_export.save_onnx

    def save_then_fail(proto, metadata, path):
        original(proto, metadata, path)
        raise interruption("stop")

    monkeypatch.setattr(onnx_export, "save_onnx", save_then_fail)
    with pytest.raises(interruption):
        export(trained_model_path, "onnx", tmp_path / "m.onnx", verify=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "options", "message"),
    [
        ("onx", {}, "did you mean onnx"),
        ("tflite", {"precision": "fp16"}, "--precision does not apply to tflite"),
        ("onnx", {"scheme": "s8s8"}, "options for onnx: --opset"),
        ("onnx-int8", {}, "needs calibration data"),
        ("tflite-int8", {}, "--calib-data"),
        ("onnx", {"opset": 21}, "--opset must be one of 13, 14, 15, 16, 17, 18, not 21"),
    ],
)
def test_bad_export_requests(fmt, options, message, tmp_path, trained_model_path) -> None:
    suffix = ".tflite" if fmt.startswith("tflite") else ".onnx"
    with pytest.raises(InvalidArgumentError, match=message) as info:
        export(trained_model_path, fmt, tmp_path / f"m{suffix}", verify=False, **options)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_format_aliases_and_suffix_check(tmp_path, trained_model_path) -> None:
    assert find_format("TensorRT").name == find_format("engine").name == "trt"
    with pytest.raises(InvalidArgumentError, match=r"must end in \.onnx"):
        export(trained_model_path, "onnx", tmp_path / "m.tflite")


def test_tolerance_table_orders_precisions() -> None:
    assert TOLERANCES["fp32"].atol < TOLERANCES["fp16"].atol
    assert TOLERANCES["int8"].atol is None and TOLERANCES["int8"].min_top1 == 0.99
