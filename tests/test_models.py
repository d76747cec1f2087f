"""The ResNet family: structure, parameter counts, FLOPs, keras.applications compatibility, errors."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.errors import InvalidArgumentError, ModelFileError
from resnet_edge.models import SPECS, build_resnet, count_macs
from resnet_edge.models.resnet import FEATURE_STRIDES, load_weights

keras = pytest.importorskip("keras")

# Parameters at 224x224 with 1000 classes (keras.applications counts for 50/101/152), and the
# paper's multiply-adds (3.6 G for resnet34, 3.8 G for resnet50, 7.6 G and 11.3 G for 101/152).
EXPECTED = {
    "resnet18": (11_703_912, 1.81e9),
    "resnet34": (21_823_208, 3.66e9),
    "resnet50": (25_636_712, 3.86e9),
    "resnet101": (44_707_176, 7.58e9),
    "resnet152": (60_419_944, 11.30e9),
}
APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}


@pytest.mark.parametrize("name", list(SPECS))
def test_parameters_and_flops_match_the_paper(name: str) -> None:
    model = build_resnet(name)
    params, macs = EXPECTED[name]
    assert model.count_params() == params
    assert count_macs(model) == pytest.approx(macs, rel=0.01)
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize("name", list(SPECS))
def test_layer_names_are_hierarchical(name: str) -> None:
    names = {layer.name for layer in build_resnet(name, (64, 64, 3), num_classes=4).layers}
    assert {"conv1_conv", "conv1_bn", "pool1_pool", "conv2_block1_1_conv", "conv5_block1_0_conv", "predictions"} <= names
    blocks = SPECS[name].blocks
    assert f"conv4_block{blocks[2]}_out" in names and f"conv4_block{blocks[2] + 1}_out" not in names


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n != "resnet50" else ()) for n in APPLICATIONS])
def test_keras_applications_weights_give_identical_outputs(name: str) -> None:
    reference = getattr(keras.applications, APPLICATIONS[name])(weights=None, input_shape=(64, 64, 3))
    model = build_resnet(name, (64, 64, 3), preprocessing="none")
    model.set_weights(reference.get_weights())
    batch = np.random.default_rng(0).uniform(-2, 2, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(batch).numpy(), reference(batch).numpy())


def test_caffe_preprocessing_matches_keras_applications() -> None:
    reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    model = build_resnet("resnet50", (64, 64, 3), preprocessing="caffe")
    model.set_weights(reference.get_weights())
    pixels = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    expected = reference(keras.applications.resnet.preprocess_input(pixels.copy())).numpy()
    np.testing.assert_allclose(model(pixels).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_scale_preprocessing_divides_by_255() -> None:
    scaled = build_resnet("resnet18", (32, 32, 3), num_classes=3, preprocessing="scale")
    raw = build_resnet("resnet18", (32, 32, 3), num_classes=3, preprocessing="none")
    raw.set_weights(scaled.get_weights())
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(scaled(pixels).numpy(), raw(pixels / 255.0).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_feature_backbone_strides(name: str) -> None:
    levels = ("c2", "c3", "c4", "c5")
    model = build_resnet(name, (128, 96, 3), features=levels)
    width = 4 if SPECS[name].bottleneck else 1
    channels = {"c2": 64 * width, "c3": 128 * width, "c4": 256 * width, "c5": 512 * width}
    for level, shape in zip(levels, model.output_shape, strict=True):
        stride = FEATURE_STRIDES[level]
        assert shape == (None, 128 // stride, 96 // stride, channels[level])


def test_seed_head_and_pooling_options() -> None:
    seed = build_resnet("resnet18", (32, 32, 3), num_classes=7, head="seed")
    names = [layer.name for layer in seed.layers]
    assert names[-5:] == ["avg_pool", "head_dropout1", "head_fc", "head_dropout2", "predictions"]
    assert seed.get_layer("head_fc").units == 1024 and seed.output_shape == (None, 7)
    assert build_resnet("resnet18", (64, 64, 3), include_top=False, pooling="avg").output_shape == (None, 512)
    assert build_resnet("resnet50", (64, 64, 3), include_top=False, pooling="max").output_shape == (None, 2048)
    assert build_resnet("resnet18", (64, 64, 3), include_top=False).output_shape == (None, 2, 2, 512)


def test_metadata_says_whether_the_head_outputs_probabilities_or_logits() -> None:
    from resnet_edge.models.io import describe

    assert describe(build_resnet("resnet18", (32, 32, 3), num_classes=4)).output_activation == "softmax"
    logits = build_resnet("resnet18", (32, 32, 3), num_classes=4, classifier_activation=None)
    assert describe(logits).output_activation == "linear"
    features = build_resnet("resnet18", (32, 32, 3), include_top=False, pooling="avg")
    assert describe(features).output_activation is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet51"}, "did you mean resnet50"),
        ({"name": "vgg16"}, "valid: resnet18, resnet34, resnet50, resnet101, resnet152"),
        ({"input_shape": (31, 64, 3)}, "at least 32"),
        ({"input_shape": (64, 64, 1)}, "3 channels"),
        ({"num_classes": 0}, "at least 1"),
        ({"head": "fancy"}, "head must be one of"),
        ({"features": ("c6",)}, "feature levels"),
        ({"preprocessing": "inception"}, "preprocessing must be one of"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs: dict, message: str) -> None:
    arguments = {"name": "resnet18", "input_shape": (32, 32, 3), "num_classes": 10, **kwargs}
    with pytest.raises(InvalidArgumentError, match=message) as info:
        build_resnet(**arguments)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_local_weights_load_by_name(tmp_path, suffix: str) -> None:
    source = build_resnet("resnet18", (32, 32, 3), num_classes=5)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".h5":
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(__import__("h5py").File(path, "w"), source)
    else:
        source.save_weights(path)
    loaded = build_resnet("resnet18", (32, 32, 3), num_classes=5, weights=path)
    batch = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(batch).numpy(), source(batch).numpy())


def test_weights_that_do_not_fit_are_a_one_line_error(tmp_path) -> None:
    path = tmp_path / "r34.weights.h5"
    build_resnet("resnet34", (32, 32, 3), num_classes=5).save_weights(path)
    with pytest.raises(ModelFileError, match="weights do not match resnet18") as info:
        load_weights(build_resnet("resnet18", (32, 32, 3), num_classes=5), path)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFileError, match="not found"):
        build_resnet("resnet18", (32, 32, 3), weights=tmp_path / "missing.h5")


PLAIN_KERAS = """
import sys
sys.modules["resnet_edge"] = None  # the toolkit cannot be imported: plain Keras only
import keras, numpy as np
model = keras.models.load_model(sys.argv[1], compile=False)
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


@pytest.mark.slow
@pytest.mark.parametrize("preprocessing", ["caffe", "torch", None])
def test_model_files_open_in_plain_keras(preprocessing, trained_model_path, tmp_path) -> None:
    """A freshly built model (one per preprocessing) and the freshly trained one, loaded without resnet_edge."""
    import subprocess
    import sys

    from resnet_edge.models.io import load_model, save_model

    if preprocessing is None:
        path = trained_model_path
        model = load_model(path)[0]
    else:
        model = build_resnet("resnet18", (32, 32, 3), num_classes=4, preprocessing=preprocessing)
        path = save_model(model, tmp_path / "built.keras")
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(path), str(tmp_path / "images.npy"),
                             str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["scale", "caffe", "torch", "tf", "none"])
def test_preprocessing_modes_are_standard_layers_equal_to_the_legacy_layer(mode, tmp_path) -> None:
    from resnet_edge.models.resnet import InputPreprocessing, preprocessing_of

    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    model = build_resnet("resnet18", (32, 32, 3), num_classes=3, preprocessing=mode)
    assert preprocessing_of(model) == mode
    assert all(type(layer).__module__.startswith("keras") for layer in model.layers)
    front = keras.Model(model.inputs, model.get_layer("conv1_pad").input)
    inputs = keras.Input((32, 32, 3))
    legacy = keras.Model(inputs, InputPreprocessing(mode)(inputs))  # what model files of earlier versions hold
    np.testing.assert_array_equal(front.predict(images, verbose=0), legacy.predict(images, verbose=0))
    legacy.save(tmp_path / "legacy.keras")
    assert preprocessing_of(keras.models.load_model(tmp_path / "legacy.keras")) == mode


def _foreign_model():
    """A model built without resnet_edge, expecting keras.applications-style preprocessed input."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="predictions")(x), name="foreign")


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_a_foreign_model_behind_preprocessing_takes_raw_pixels(mode) -> None:
    from keras.applications.imagenet_utils import preprocess_input

    from resnet_edge.models.resnet import preprocessing_of, with_preprocessing

    model = _foreign_model()
    wrapped = with_preprocessing(model, mode)
    assert preprocessing_of(model) == "none" and preprocessing_of(wrapped) == mode
    assert [layer.name for layer in wrapped.layers][2:] == ["stem", "pool", "predictions"]  # flat, names kept
    pixels = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    expected = model.predict(preprocess_input(pixels.copy(), mode=mode), verbose=0)
    np.testing.assert_allclose(wrapped.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="already has in-model preprocessing"):
        with_preprocessing(wrapped, "tf")


@pytest.mark.slow
def test_export_records_the_preprocessing_put_in_front(tmp_path) -> None:
    from keras.applications.imagenet_utils import preprocess_input

    from resnet_edge.exporter import export
    from resnet_edge.predictor import load

    model = _foreign_model()
    result = export(model, "onnx", tmp_path / "foreign.onnx", preprocessing="torch")
    assert result.parity and result.metadata.preprocessing == "torch"
    pixels = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    with load(result.path, device="cpu") as predictor:
        assert predictor.metadata.preprocessing == "torch"
        outputs = predictor(pixels)
    expected = model.predict(preprocess_input(pixels.astype(np.float32), mode="torch"), verbose=0)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)
