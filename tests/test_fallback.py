"""The accuracy budget: a layer int8 cannot represent is found, kept in float, and the export then passes."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.errors import InvalidArgumentError, ParityError
from resnet_edge.exporter import export
from resnet_edge.fallback import AccuracyBudget, float_step, fused_unit

DAMAGED = "conv3_block1_1"
SUFFIX = {"onnx-int8": ".onnx", "tflite-int8": ".tflite"}


@pytest.fixture(scope="module")
def damaged(trained_model):
    """The same function as the trained model, but one channel of ``conv3_block1_1``'s output 1000x larger.

    The next convolution divides it back, so the float model is unchanged; int8's one scale per tensor
    then rounds every other channel of that tensor to zero.
    """
    import keras

    model = keras.models.clone_model(trained_model)
    model.set_weights(trained_model.get_weights())
    norm = model.get_layer(f"{DAMAGED}_bn")
    gamma, beta, mean, variance = norm.get_weights()
    gamma[0] *= 1000.0
    beta[0] *= 1000.0
    norm.set_weights([gamma, beta, mean, variance])
    consumer = model.get_layer("conv3_block1_2_conv")
    kernel, bias = consumer.get_weights()
    kernel[:, :, 0, :] /= 1000.0
    consumer.set_weights([kernel, bias])
    return model


def test_the_damage_leaves_the_float_model_unchanged(damaged, trained_model, digits) -> None:
    images = digits.images[:64].astype(np.float32)
    np.testing.assert_allclose(damaged.predict(images, verbose=0), trained_model.predict(images, verbose=0), atol=1e-4)


def test_fused_units_and_the_fallback_step_follow_the_graph(trained_model) -> None:
    assert fused_unit(trained_model, "conv3_block1_2_bn") == ["conv3_block1_2_conv", "conv3_block1_2_bn"]
    assert fused_unit(trained_model, "conv3_block1_1_conv") == [f"{DAMAGED}_conv", f"{DAMAGED}_bn", f"{DAMAGED}_relu"]
    step = float_step(trained_model, [("conv3_block1_2_bn", 0.3), ("predictions", 0.1)], set())
    assert set(step) == {"conv3_block1_2_conv", "conv3_block1_2_bn", f"{DAMAGED}_conv", f"{DAMAGED}_bn",
                         f"{DAMAGED}_relu"}
    assert float_step(trained_model, [("conv3_block1_2_bn", 0.3)], set(step)) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SUFFIX)
def test_plain_int8_fails_and_the_budget_keeps_the_damaged_layer_float(fmt, damaged, calibration_set, tmp_path) -> None:
    path = tmp_path / f"model{SUFFIX[fmt]}"
    with pytest.raises(ParityError, match="--max-drop"):
        export(damaged, fmt, path, calibration=calibration_set)
    assert not path.exists()

    result = export(damaged, fmt, path, calibration=calibration_set, budget=AccuracyBudget(max_drop=1.0))
    assert result.parity and result.fallback.met, result.parity.line()
    assert f"{DAMAGED}_relu" in result.fallback.float_layers
    assert result.metadata.extra["float_layers"] == result.fallback.float_layers
    assert result.fallback.int8_p50_ms > 0 and result.fallback.final_p50_ms > 0
    assert "kept float: " in result.fallback.line() and DAMAGED in result.fallback.line()


@pytest.mark.slow
def test_a_budget_out_of_reach_keeps_the_best_artifact_only_when_asked(damaged, calibration_set, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    tight = {"max_drop": 1.0, "max_float_layers": 2}
    with pytest.raises(ParityError):
        export(damaged, "onnx-int8", path, calibration=calibration_set, budget=AccuracyBudget(**tight))
    assert not path.exists()
    with pytest.raises(ParityError, match="best artifact was kept"):
        export(damaged, "onnx-int8", path, calibration=calibration_set,
               budget=AccuracyBudget(**tight, keep_best=True))
    assert path.stat().st_size > 0


@pytest.mark.parametrize(("fmt", "options", "message"), [
    ("onnx", {"budget": AccuracyBudget(1.0)}, "not to onnx, which is fp32, not int8"),
    ("onnx-int8", {"budget": AccuracyBudget(1.0), "verify": False}, "needs verification"),
])
def test_bad_budget_requests(fmt, options, message, trained_model, calibration_set, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        export(trained_model, fmt, tmp_path / "m.onnx", calibration=calibration_set, **options)
    with pytest.raises(InvalidArgumentError, match="percentage"):
        AccuracyBudget(max_drop=-1)
