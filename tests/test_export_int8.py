"""int8 at deployment scale: a 1000-class head keeps its softmax out of the integer graph."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.errors import ParityError
from resnet_edge.export import export
from resnet_edge.runtime import load

pytestmark = pytest.mark.slow

# (format, options, suffix): every int8 path, including the Q/DQ ONNX that TensorRT int8 is built from
INT8 = {"onnx-int8": ({}, ".onnx"), "onnx-int8-trt": ({"scheme": "trt"}, ".onnx"), "tflite-int8": ({}, ".tflite")}


def _export(model, name: str, path_stem, calibration, **extra):
    options, suffix = INT8[name]
    return export(model, name.removesuffix("-trt"), path_stem.with_suffix(suffix), calibration=calibration,
                  **options, **extra)


@pytest.fixture(scope="module")
def random_wide():
    """resnet18 @32 with random weights and a 1000-class softmax head: every probability is below 1/512."""
    import keras

    from resnet_edge.models import build_resnet

    keras.utils.set_random_seed(0)
    return build_resnet("resnet18", (32, 32, 3), num_classes=1000)


@pytest.fixture(scope="module")
def trained_wide(trained_model):
    """The trained digits model with its head widened to 1000 classes (990 never seen in training)."""
    import keras

    from resnet_edge.models import build_resnet

    keras.utils.set_random_seed(1)
    wide = build_resnet("resnet18", (32, 32, 3), num_classes=1000)
    for layer in trained_model.layers:
        if layer.name != "predictions":
            wide.get_layer(layer.name).set_weights(layer.get_weights())
    kernel, bias = trained_model.get_layer("predictions").get_weights()
    head = wide.get_layer("predictions")
    wide_kernel, wide_bias = head.get_weights()
    wide_kernel[:, :10], wide_bias[:10] = kernel, bias
    wide_kernel[:, 10:] *= kernel.std() / wide_kernel.std()
    head.set_weights([wide_kernel, wide_bias])
    return wide


@pytest.mark.parametrize("name", INT8)
def test_in_graph_int8_softmax_collapses_and_logits_out_passes(name, random_wide, calibration_set, tmp_path) -> None:
    with pytest.raises(ParityError, match="cosine"):
        _export(random_wide, name, tmp_path / "softmax", calibration_set, int8_softmax=True)
    assert not list(tmp_path.iterdir())

    result = _export(random_wide, name, tmp_path / "logits", calibration_set)
    assert result.parity and result.parity.compared == "logits", result.parity.line()
    assert result.metadata.output_activation == "linear"
    assert result.metadata.extra["calibration_images"] == len(calibration_set)
    with load(result.path, device="cpu") as predictor:
        scores = predictor.predict(calibration_set.holdout.images[:4], top_k=1000).predictions
    for prediction in scores:
        assert sum(prediction.scores) == pytest.approx(1.0, abs=1e-4)
        assert min(prediction.scores) > 0  # no class erased to zero


@pytest.mark.parametrize("name", INT8)
def test_top5_ranking_matches_float_on_a_low_confidence_input(name, trained_wide, calibration_set, tmp_path) -> None:
    from resnet_edge.models.resnet import logits_model

    images = calibration_set.holdout.sample(64, seed=3).images
    probabilities = trained_wide.predict(images.astype(np.float32), verbose=0)
    uncertain = int(np.argmin(probabilities.max(axis=1)))
    assert probabilities[uncertain].max() < 0.6
    float_logits = logits_model(trained_wide).predict(images[uncertain : uncertain + 1].astype(np.float32), verbose=0)
    expected = list(np.argsort(-float_logits[0])[:5])

    result = _export(trained_wide, name, tmp_path / "model", calibration_set)
    assert result.parity.decisive_top1 >= 0.99, result.parity.line()
    with load(result.path, device="cpu") as predictor:
        best = predictor.predict(images[uncertain], top_k=5).predictions[0]
    assert best.indices == expected
    assert len(set(best.scores)) == 5  # a ranking, not ties at one int8 step


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
    result = export(model, "tflite-int8", tmp_path / "plain.tflite", calibration=calibration_set)
    assert result.metadata.output_activation == "linear" and result.parity.compared == "logits"
