"""Layer-wise int8 diagnosis: names map back to Keras layers, errors are sane, a planted fault is found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resnet_edge.errors import DataError, ModelFileError
from resnet_edge.registry import BACKENDS
from resnet_edge.registry import FORMATS as TABLE

pytestmark = pytest.mark.slow

# every int8 format whose backend can expose intermediate tensors
FORMATS = {name: f.suffix for name, f in TABLE.items() if f.calibrated and BACKENDS[f.backend].intermediates}
DAMAGED = "conv3_block1_2_conv"


@pytest.fixture(scope="module")
def keras():
    from resnet_edge._lazy import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def float_model(digits):
    from resnet_edge.models.resnet import build_resnet
    from resnet_edge.train import train

    net = build_resnet("resnet18", (32, 32, 3), 10)
    train(net, digits.sample(480, seed=3), epochs=1, verbose=0)
    return net


@pytest.fixture(scope="module")
def int8_artifacts(float_model, tmp_path_factory):
    from resnet_edge.calibration import CalibrationSet
    from resnet_edge.exporter import export

    folder = tmp_path_factory.mktemp("layerwise")
    calibration = CalibrationSet.from_source("digits", (32, 32), 100)
    paths = {}
    for fmt, suffix in FORMATS.items():
        paths[fmt] = export(float_model, fmt, folder / f"model{suffix}", calibration=calibration, verify=False).path
    return paths


@pytest.fixture(scope="module")
def images(digits):
    return digits.sample(32, seed=11).images


@pytest.fixture(scope="module")
def damaged(float_model, keras):
    """A copy of the model with noise as large as the weights themselves added to one convolution."""
    copy = keras.models.clone_model(float_model)
    copy.set_weights(float_model.get_weights())
    layer = copy.get_layer(DAMAGED)
    kernel, bias = layer.get_weights()
    noise = np.random.default_rng(0).normal(0.0, kernel.std(), kernel.shape).astype(kernel.dtype)
    layer.set_weights([kernel + noise, bias])
    return copy


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("top", [5, 3])
def test_worst_layers_are_keras_layers_sorted_and_finite(float_model, int8_artifacts, images, fmt, top):
    from resnet_edge.layerwise import worst_layers

    ranked = worst_layers(float_model, int8_artifacts[fmt], images, top=top)
    names = {layer.name for layer in float_model.layers}
    assert 0 < len(ranked) <= top
    assert all(name in names for name, _ in ranked)
    errors = [error for _, error in ranked]
    assert all(math.isfinite(e) and e >= 0 for e in errors)
    assert errors == sorted(errors, reverse=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mapping_lines_up_every_stage(float_model, int8_artifacts, images, fmt):
    """A wrong layout or a wrong tensor would show as a large error; a healthy int8 model stays close."""
    from resnet_edge.layerwise import layer_errors

    errors = layer_errors(float_model, int8_artifacts[fmt], images)
    assert len(errors) >= 25
    for stage in ("conv1_relu", "conv2_block1_out", "conv3_block2_2_bn", "conv5_block2_out", "avg_pool",
                  "predictions"):
        assert stage in errors
    assert max(errors.values()) < 0.02, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_planted_damage_is_found(damaged, int8_artifacts, images, fmt):
    from resnet_edge.layerwise import worst_layers

    ranked = worst_layers(damaged, int8_artifacts[fmt], images, top=5)
    assert ranked[0][0].startswith("conv3_block1_"), ranked

    cumulative = [name for name, _ in worst_layers(damaged, int8_artifacts[fmt], images, top=100, cumulative=True)]
    layers = [layer.name for layer in damaged.layers]
    before = {name for name in layers[: layers.index(DAMAGED)]}
    first_damaged = next(i for i, name in enumerate(cumulative) if name.startswith("conv3_block1_2"))
    assert not before & set(cumulative[:first_damaged]), cumulative


def test_artifact_is_left_untouched(float_model, int8_artifacts, images):
    from resnet_edge.layerwise import worst_layers

    path = int8_artifacts["onnx-int8"]
    before = (path.read_bytes(), sorted(p.name for p in path.parent.iterdir()))
    worst_layers(float_model, path, images[:4])
    assert (path.read_bytes(), sorted(p.name for p in path.parent.iterdir())) == before


def test_unrelated_model_matches_nothing(keras, int8_artifacts, images):
    from resnet_edge.layerwise import worst_layers

    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    other = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    for path in int8_artifacts.values():
        assert worst_layers(other, path, images[:4]) == []


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_unreadable_artifact_is_a_model_file_error(float_model, images, tmp_path, suffix):
    from resnet_edge.layerwise import worst_layers

    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(b"\x00not a model" * 16)
    with pytest.raises(ModelFileError):
        worst_layers(float_model, broken, images[:2])
    with pytest.raises(ModelFileError):
        worst_layers(float_model, tmp_path / f"missing{suffix}", images[:2])


def test_images_must_fit_the_model(float_model, int8_artifacts, images):
    from resnet_edge.layerwise import worst_layers

    with pytest.raises(DataError):
        worst_layers(float_model, int8_artifacts["tflite-int8"], images[:2, :16])


def test_layer_of_reads_converter_names():
    from resnet_edge.layerwise import layer_of

    layers = {"conv2_block1_1_conv": 1, "conv2_block1_1_bn": 2, "conv2_block1_1_relu": 3, "conv2_block1_add": 4,
              "conv2_block1_out": 5}
    assert layer_of("resnet18_1/conv2_block1_out_1/Relu:0", layers) == "conv2_block1_out"
    fused = ("resnet18_1/conv2_block1_1_relu_1/Relu;resnet18_1/conv2_block1_1_bn_1/batchnorm/add_1;"
             "resnet18_1/conv2_block1_1_conv_1/convolution")
    assert layer_of(fused, layers) == "conv2_block1_1_relu"
    assert layer_of("resnet18_1/conv2_block1_out_1/Relu;resnet18_1/conv2_block1_add_1/Add", layers) == "conv2_block1_out"
    assert layer_of("serving_default_input:0", layers) is None
