"""tflite-int8's two quantizers: LiteRT Quantizer (the default) and TensorFlow's MLIR quantizer (a variant).

Both must write a full-integer file that passes parity; they should be drop-in replacements for each other
(same ops, same I/O types and scales from the same true min/max ranges), keep ``float_layers`` float, and a
missing LiteRT Quantizer must be one line naming what to install, before any conversion work.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from resnet_edge.errors import InvalidArgumentError, MissingDependencyError
from resnet_edge.exporter import export
from resnet_edge.registry import FORMATS

QUANTIZERS = ("litert", "mlir")
FLOAT_LAYER = "conv3_block1_1_relu"  # the conv + batch norm + ReLU that TFLite fuses into one CONV_2D


def _ops(path) -> list[tuple[str, str, str]]:
    """(op, first output tensor's name, its dtype) for every op of a ``.tflite``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        output = tensors[int(op["outputs"][0])]
        found.append((op["op_name"], output["name"], np.dtype(output["dtype"]).name))
    return found


@pytest.fixture(scope="module")
def routes(trained_model_path, calibration_set, tmp_path_factory):
    """The trained digits model exported (and verified) by each quantizer."""
    folder = tmp_path_factory.mktemp("quantizers")
    return {q: export(trained_model_path, "tflite-int8", folder / f"{q}.tflite", calibration=calibration_set,
                      quantizer=q) for q in QUANTIZERS}


def test_the_quantizer_is_an_option_of_the_row_with_the_other_one_a_variant() -> None:
    row = FORMATS["tflite-int8"]
    option = row.options["quantizer"]
    assert option.flag == "--quantizer" and set(option.choices) == set(QUANTIZERS)
    other = next(q for q in QUANTIZERS if q != option.default)
    assert {"quantizer": other} in [dict(v) for v in row.variants]
    with pytest.raises(InvalidArgumentError, match="--quantizer must be one of") as caught:
        row.resolve_options({"quantizer": "tvm"})
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidArgumentError, match="--quantizer does not apply to onnx-int8"):
        FORMATS["onnx-int8"].resolve_options({"quantizer": "mlir"})


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_each_quantizer_writes_a_full_integer_file_that_passes_parity(quantizer, routes) -> None:
    result = routes[quantizer]
    assert result.parity and result.parity.passed and result.parity.compared == "logits", result.parity.line()
    assert result.parity.cosine >= 0.999 and result.parity.top1_agreement >= 0.99
    assert result.metadata.input_dtype == "int8" and result.metadata.output_quantization is not None
    assert result.metadata.extra["quantizer"] == quantizer
    assert ("litert-quantizer" in result.metadata.tools) == (quantizer == "litert")
    ops = _ops(result.path)
    assert not [op for op in ops if op[2] == "float32"], "no op may stay float"
    assert not [op for op in ops if op[0] in ("QUANTIZE", "DEQUANTIZE")]


@pytest.mark.slow
def test_the_two_quantizers_write_the_same_graph_from_the_same_ranges(routes) -> None:
    """The same op sequence, and the same input and output scales: both calibrate with the true min/max over
    the whole set (LiteRT Quantizer's own ``calibrate()`` would average them, giving other scales)."""
    litert, mlir = routes["litert"], routes["mlir"]
    assert [op[0] for op in _ops(litert.path)] == [op[0] for op in _ops(mlir.path)]
    assert litert.metadata.input_quantization == mlir.metadata.input_quantization
    assert litert.metadata.output_quantization.zero_point == mlir.metadata.output_quantization.zero_point
    assert litert.metadata.output_quantization.scale == pytest.approx(mlir.metadata.output_quantization.scale,
                                                                      rel=1e-5)


@pytest.mark.slow
def test_litert_keeps_float_layers_float_and_the_rest_integer(trained_model_path, calibration_set, tmp_path) -> None:
    result = export(trained_model_path, "tflite-int8", tmp_path / "float_layers.tflite", calibration=calibration_set,
                    quantizer="litert", float_layers=(FLOAT_LAYER,))
    assert result.parity.passed, result.parity.line()
    assert result.metadata.extra["float_layers"] == [FLOAT_LAYER]
    ops = _ops(result.path)
    float_ops = [(op, name) for op, name, dtype in ops if dtype == "float32" and op != "DEQUANTIZE"]
    assert len(float_ops) == 1 and float_ops[0][0] == "CONV_2D" and f"{FLOAT_LAYER}_1/" in float_ops[0][1]
    assert [op for op, _, _ in ops].count("QUANTIZE") == 1 and [op for op, _, _ in ops].count("DEQUANTIZE") == 1
    assert result.metadata.input_dtype == "int8" and result.metadata.output_quantization is not None


@pytest.mark.slow
def test_litert_with_uint8_io(trained_model_path, calibration_set, tmp_path) -> None:
    from resnet_edge.predictor import load

    result = export(trained_model_path, "tflite-int8", tmp_path / "uint8.tflite", calibration=calibration_set,
                    quantizer="litert", io="uint8")
    assert result.parity.passed, result.parity.line()
    assert result.metadata.input_dtype == "uint8"
    assert result.metadata.input_quantization.zero_point == 0
    with load(result.path, device="cpu") as predictor:
        assert np.asarray(predictor(calibration_set.images[:3])).shape == (3, 10)  # another batch size


def test_a_missing_litert_quantizer_is_one_line_with_the_install_line(trained_model_path, calibration_set,
                                                                     tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_quantizer.quantizer", None)  # import fails as if not installed
    path = tmp_path / "model.tflite"
    with pytest.raises(MissingDependencyError) as caught:
        export(trained_model_path, "tflite-int8", path, calibration=calibration_set, quantizer="litert")
    message = str(caught.value)
    assert "\n" not in message and "LiteRT Quantizer" in message and "pip install 'resnet-edge[tflite]'" in message
    assert "--quantizer mlir" in message
    assert not list(tmp_path.iterdir())
