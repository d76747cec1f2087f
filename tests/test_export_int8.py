"""int8 at deployment scale: a 1000-class head keeps its softmax out of the integer graph."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.errors import ParityError
from resnet_edge.exporter import export
from resnet_edge.predictor import load

pytestmark = pytest.mark.slow

# name: (format, options, suffix): every int8 path, including the Q/DQ ONNX that TensorRT int8 is built from and
# both TFLite quantizers (LiteRT Quantizer, the default, and TensorFlow's MLIR quantizer)
INT8 = {"onnx-int8": ("onnx-int8", {}, ".onnx"), "onnx-int8-s8s8": ("onnx-int8", {"scheme": "s8s8"}, ".onnx"),
        "tflite-int8": ("tflite-int8", {}, ".tflite"),
        "tflite-int8-mlir": ("tflite-int8", {"quantizer": "mlir"}, ".tflite")}


def _export(model, name: str, path_stem, calibration, **extra):
    fmt, options, suffix = INT8[name]
    return export(model, fmt, path_stem.with_suffix(suffix), calibration=calibration, **options, **extra)


@pytest.fixture(scope="module")
def random_wide():
    """resnet18 @32 with random weights and a 1000-class softmax head: every probability is below 1/512."""
    import keras

    from resnet_edge.models import build_resnet

    keras.utils.set_random_seed(0)
    return build_resnet("resnet18", (32, 32, 3), num_classes=1000)


@pytest.mark.parametrize("name", [name for name in INT8 if name != "tflite-int8-mlir"])  # the variant: below
def test_in_graph_int8_softmax_collapses_and_logits_out_passes(name, random_wide, calibration_set, tmp_path) -> None:
    with pytest.raises(ParityError, match="cosine"):
        _export(random_wide, name, tmp_path / "softmax", calibration_set, int8_softmax=True)
    assert not list(tmp_path.iterdir())

    result = _export(random_wide, name, tmp_path / "logits", calibration_set)
    assert result.parity and result.parity.compared == "logits", result.parity.line()
    assert result.metadata.output_activation == "linear"
    assert result.metadata.extra["calibration_images"] == len(calibration_set)


@pytest.mark.parametrize("name", INT8)
def test_uncertain_frames_keep_a_ranking_that_the_int8_softmax_erases(name, random_wide, calibration_set,
                                                                      tmp_path) -> None:
    """Every input is low-confidence here (best probability about 1/1000). Exact order among near-tied
    classes is not int8's to keep (they differ by less than its noise); the top-5 set and the float top-1
    inside it are."""
    from resnet_edge.models.resnet import logits_model
    from resnet_edge.parity import compare_outputs

    images = calibration_set.holdout.sample(200, seed=3).images
    in_graph = _export(random_wide, name, tmp_path / "softmax", calibration_set, int8_softmax=True, verify=False)
    with load(in_graph.path, device="cpu") as predictor:
        assert predictor.predict(images[0], top_k=5).predictions[0].scores == [0.0] * 5  # all tied: no ranking

    result = _export(random_wide, name, tmp_path / "logits", calibration_set)
    with load(result.path, device="cpu") as predictor:
        logits = predictor(images)
        predictions = predictor.predict(images[:8], top_k=1000).predictions
    for prediction in predictions:
        assert sum(prediction.scores) == pytest.approx(1.0, abs=1e-4) and min(prediction.scores) > 0
        assert len(set(prediction.scores[:5])) >= 3  # a ranking (int8 logits may still tie two neighbours)
    float_logits = logits_model(random_wide).predict(images.astype(np.float32), verbose=0)
    report = compare_outputs([float_logits], [logits], "int8", logits=True)
    assert report.top5_agreement >= 0.98 and report.top5_overlap >= 0.8, report.to_dict()


def test_a_model_ending_in_a_softmax_layer_exports_logits(calibration_set, tmp_path) -> None:
    """A model the project did not build: Keras layers, a separate Softmax layer at the end."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1000)(x)
    outputs = keras.layers.Softmax()(x)
    model = keras.Model(inputs, outputs, name="plain")
    for quantizer in ("litert", "mlir"):
        result = export(model, "tflite-int8", tmp_path / f"plain_{quantizer}.tflite", calibration=calibration_set,
                        quantizer=quantizer)
        assert result.metadata.output_activation == "linear" and result.parity.compared == "logits"
