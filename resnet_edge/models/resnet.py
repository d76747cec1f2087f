"""The ResNet family of He et al. (2015) in the Keras functional API.

The depth table is data (``SPECS``); one stack function builds every depth. Layer names and weight
order follow ``keras.applications`` (``conv1_conv``, ``conv2_block1_1_conv`` ...), so its weights load
into resnet50/101/152 unchanged and a user's local ImageNet ``.h5`` loads by name.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import import_keras
from ..errors import InvalidArgumentError, ModelFileError, first_line

keras = import_keras()
layers = keras.layers

BN_EPSILON = 1.001e-5
# Faster-settling moving statistics than Keras' 0.99, so short runs on small datasets validate well;
# inference (and weight compatibility with keras.applications) is unaffected.
BN_MOMENTUM = 0.9
MIN_INPUT_SIDE = 32
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEADS = ("paper", "seed")
POOLINGS = (None, "avg", "max")
FEATURE_LEVELS = {"c1": "pool1_pool", "c2": "conv2", "c3": "conv3", "c4": "conv4", "c5": "conv5"}
FEATURE_STRIDES = {"c1": 4, "c2": 4, "c3": 8, "c4": 16, "c5": 32}
EMBEDDING = "embedding"  # the name of an embedding model's output


@dataclass(frozen=True)
class ResNetSpec:
    """One row of the depth table: block kind and blocks per stage (conv2_x .. conv5_x)."""

    bottleneck: bool
    blocks: tuple[int, int, int, int]
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)

    @property
    def expansion(self) -> int:
        return 4 if self.bottleneck else 1


SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(bottleneck=False, blocks=(2, 2, 2, 2)),
    "resnet34": ResNetSpec(bottleneck=False, blocks=(3, 4, 6, 3)),
    "resnet50": ResNetSpec(bottleneck=True, blocks=(3, 4, 6, 3)),
    "resnet101": ResNetSpec(bottleneck=True, blocks=(3, 4, 23, 3)),
    "resnet152": ResNetSpec(bottleneck=True, blocks=(3, 8, 36, 3)),
}


@dataclass(frozen=True)
class Preprocessing:
    """RGB pixels 0-255 to a network's input: optionally reversed to BGR, then ``x * scale + offset`` per channel."""

    bgr: bool
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]


# The conventions of keras.applications' ``preprocess_input`` (mode caffe/torch/tf) and the seeds' x/255.
PREPROCESSING: dict[str, Preprocessing | None] = {
    "scale": Preprocessing(False, (1 / 255,) * 3, (0.0,) * 3),
    "caffe": Preprocessing(True, (1.0,) * 3, tuple(-m for m in CAFFE_MEAN_BGR)),
    "torch": Preprocessing(False, tuple(1 / (255 * s) for s in TORCH_STD),
                           tuple(-m / s for m, s in zip(TORCH_MEAN, TORCH_STD, strict=True))),
    "tf": Preprocessing(False, (1 / 127.5,) * 3, (-1.0,) * 3),
    "none": None,
}
PREPROCESS_LAYER = "preprocess"


def _check_preprocessing(mode: str) -> Preprocessing | None:
    if mode not in PREPROCESSING:
        raise InvalidArgumentError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, not {mode!r}")
    return PREPROCESSING[mode]


def preprocessing_block(x, mode: str):
    """The preprocessing in standard Keras, so plain Keras loads the model file: a ``Rescaling`` layer named
    ``preprocess`` (per-channel scale and offset), after a channel flip (a ``keras.ops`` node) for BGR.
    No weights, so a model's weight list stays that of ``keras.applications``."""
    spec = _check_preprocessing(mode)
    if spec is None:
        return x
    if spec.bgr:
        x = keras.ops.flip(x, axis=-1)
    uniform = len(set(spec.scale)) == 1 and len(set(spec.offset)) == 1
    scale, offset = (spec.scale[0], spec.offset[0]) if uniform else (list(spec.scale), list(spec.offset))
    return layers.Rescaling(scale, offset, name=PREPROCESS_LAYER)(x)


@keras.saving.register_keras_serializable(package="resnet_edge")
class InputPreprocessing(layers.Layer):
    """The in-model preprocessing of model files written before it was made of standard layers; loads them."""

    def __init__(self, mode: str = "scale", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_preprocessing(mode)
        self.mode = mode

    def call(self, inputs):
        spec = PREPROCESSING[self.mode]
        if spec is None:
            return inputs
        if spec.bgr:
            inputs = keras.ops.flip(inputs, axis=-1)
        scale = keras.ops.convert_to_tensor(spec.scale, inputs.dtype)
        return inputs * scale + keras.ops.convert_to_tensor(spec.offset, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same" if kernel > 1 else "valid",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=3, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def _residual_branch(x, filters: int, stride: int, bottleneck: bool, name: str):
    if bottleneck:
        x = _conv_bn(x, filters, 1, stride, f"{name}_1", relu=True)
        x = _conv_bn(x, filters, 3, 1, f"{name}_2", relu=True)
        return _conv_bn(x, 4 * filters, 1, 1, f"{name}_3", relu=False)
    x = _conv_bn(x, filters, 3, stride, f"{name}_1", relu=True)
    return _conv_bn(x, filters, 3, 1, f"{name}_2", relu=False)


def _merge(shortcut, residual, name: str):
    x = layers.Add(name=f"{name}_add")([shortcut, residual])
    return layers.Activation("relu", name=f"{name}_out")(x)


def conv_block(x, filters: int, stride: int = 2, *, bottleneck: bool = True, name: str):
    """Residual block whose shortcut is a strided 1x1 projection (changes size and/or width)."""
    expansion = 4 if bottleneck else 1
    shortcut = _conv_bn(x, expansion * filters, 1, stride, f"{name}_0", relu=False)
    return _merge(shortcut, _residual_branch(x, filters, stride, bottleneck, name), name)


def identity_block(x, filters: int, *, bottleneck: bool = True, name: str):
    """Residual block whose shortcut is the input itself (same size and width)."""
    return _merge(x, _residual_branch(x, filters, 1, bottleneck, name), name)


def stack(x, filters: int, blocks: int, stride: int, bottleneck: bool, name: str):
    """One stage: a conv_block (projection when size or width changes), then identity blocks."""
    expansion = 4 if bottleneck else 1
    if stride != 1 or x.shape[-1] != expansion * filters:
        x = conv_block(x, filters, stride, bottleneck=bottleneck, name=f"{name}_block1")
    else:
        x = identity_block(x, filters, bottleneck=bottleneck, name=f"{name}_block1")
    for index in range(2, blocks + 1):
        x = identity_block(x, filters, bottleneck=bottleneck, name=f"{name}_block{index}")
    return x


def _check_name(name: str) -> ResNetSpec:
    if name in SPECS:
        return SPECS[name]
    close = difflib.get_close_matches(name, SPECS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise InvalidArgumentError(f"unknown model {name!r}{hint}; valid: {', '.join(SPECS)}")


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise InvalidArgumentError(f"input shape must be (height, width, 3), got {tuple(input_shape)}")
    height, width, channels = (int(v) for v in input_shape)
    if channels != 3:
        raise InvalidArgumentError(f"input must have 3 channels (RGB), got {channels}")
    if min(height, width) < MIN_INPUT_SIDE:
        raise InvalidArgumentError(f"input side must be at least {MIN_INPUT_SIDE}, got {height}x{width}")
    return height, width, channels


def _head(x, head: str, num_classes: int, activation: str | None):
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if head == "seed":
        x = layers.Dropout(0.5, name="head_dropout1")(x)
        x = layers.Dense(1024, activation="relu", name="head_fc")(x)
        x = layers.Dropout(0.5, name="head_dropout2")(x)
    return layers.Dense(num_classes, activation=activation, name="predictions")(x)


def build_resnet(
    name: str = "resnet50",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    include_top: bool | None = None,
    features: tuple[str, ...] | None = None,
    head: str = "paper",
    pooling: str | None = None,
    preprocessing: str = "scale",
    classifier_activation: str | None = "softmax",
    weights: str | os.PathLike[str] | None = None,
    normalize: bool = False,
):
    """Build a ResNet as a functional ``keras.Model`` that takes RGB pixels 0-255.

    ``features=("c2","c3","c4","c5")`` returns a multi-output backbone (strides 4/8/16/32);
    ``head`` is ``"paper"`` (GAP + softmax Dense) or ``"seed"`` (GAP, Dropout, Dense 1024, Dropout, Dense);
    ``include_top=False, pooling="avg"|"max"`` returns an embedding model (the pooled c5 vector, L2-normalised when
    ``normalize``), with Keras' own ``include_top``/``pooling`` semantics; ``weights`` is a local ``.h5`` /
    ``.weights.h5`` file, or a ``.keras`` model file (a trained classifier into a backbone), loaded by layer name.
    Feature outputs are named by level (``c3``), an embedding ``embedding``: weightless identity layers, so layer
    names and weight order stay those of ``keras.applications``.
    """
    spec = _check_name(name)
    include_top = features is None if include_top is None else include_top  # features= alone means a backbone
    shape = _check_shape(input_shape)
    if head not in HEADS:
        raise InvalidArgumentError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    if pooling not in POOLINGS:
        raise InvalidArgumentError(f"pooling must be one of avg, max or none, not {pooling!r}")
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise InvalidArgumentError(f"number of classes must be at least 1, got {num_classes}")
    if features is not None:
        features = tuple(features)
        unknown = [f for f in features if f not in FEATURE_LEVELS]
        if unknown or not features:
            raise InvalidArgumentError(
                f"feature levels must be among {', '.join(FEATURE_LEVELS)}, got {', '.join(unknown) or 'none'}"
            )
        if len(set(features)) != len(features):
            raise InvalidArgumentError(f"feature levels repeat: {', '.join(features)}")
        if include_top or pooling is not None:
            raise InvalidArgumentError("features are a backbone's outputs: no classifier head and no pooling with them")
    if normalize and (include_top or pooling is None):
        raise InvalidArgumentError("L2 normalisation applies to an embedding (no head, with pooling avg or max)")

    inputs = keras.Input(shape=shape, name="input")
    x = preprocessing_block(inputs, preprocessing)
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=3, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    levels = {"c1": x}
    for stage, (width, blocks) in enumerate(zip(spec.widths, spec.blocks, strict=True)):
        x = stack(x, width, blocks, stride=1 if stage == 0 else 2, bottleneck=spec.bottleneck,
                  name=f"conv{stage + 2}")
        levels[f"c{stage + 2}"] = x

    if features is not None:
        outputs: Any = [layers.Identity(name=level)(levels[level]) for level in features]
        outputs = outputs[0] if len(outputs) == 1 else outputs
    elif include_top:
        outputs = _head(x, head, num_classes, classifier_activation)
    elif pooling is not None:
        pooled = (layers.GlobalAveragePooling2D(name="avg_pool") if pooling == "avg"
                  else layers.GlobalMaxPooling2D(name="max_pool"))(x)
        outputs = (layers.UnitNormalization(name=EMBEDDING) if normalize else layers.Identity(name=EMBEDDING))(pooled)
    else:
        outputs = layers.Identity(name="c5")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model, path: str | os.PathLike[str], skip_mismatch: bool = False) -> None:
    """Load a local weights file by layer name; a file that does not fit the model is a one-line error.

    ``skip_mismatch`` leaves layers whose shapes differ (a new classifier head) at their initial values. A ``.keras``
    model file (say a classifier trained with ``train``) gives its layers' weights to the layers of the same name
    and shapes (a backbone or an embedding model built from it).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    if path.suffix == ".keras":
        _weights_from_model(model, path)
        return
    try:
        if path.name.endswith(".weights.h5"):
            model.load_weights(path, skip_mismatch=skip_mismatch)
        elif path.suffix in (".h5", ".hdf5"):
            model.load_weights(path, by_name=True, skip_mismatch=skip_mismatch)
        else:
            raise ModelFileError(f"{path}: weights must be a .h5, .weights.h5 or .keras file")
    except (ValueError, KeyError, OSError, TypeError) as exc:
        raise ModelFileError(f"{path}: weights do not match {model.name}: {first_line(exc)}") from exc


def _weights_from_model(model, path: Path) -> None:
    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load Keras model ({type(exc).__name__}: {first_line(exc)})") from exc
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    copied = 0
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights:
            continue
        if [tuple(w.shape) for w in other.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(other.get_weights())
            copied += 1
    if copied == 0:
        raise ModelFileError(f"{path}: no layer of {source.name} fits {model.name} (names or shapes differ)")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (the paper's "FLOPs")."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_h, kernel_w, in_channels, _ = layer.kernel.shape
            total += height * width * out_channels * kernel_h * kernel_w * in_channels
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)


def output_activation_of(model) -> str | None:
    """``"softmax"`` when the classifier's output is already probabilities, ``"linear"`` for logits, else None."""
    if len(model.outputs) != 1 or len(model.output_shape) != 2:
        return None
    last = model.layers[-1]
    if isinstance(last, layers.Softmax):
        return "softmax"
    name = getattr(getattr(last, "activation", None), "__name__", None)
    return name if name in ("softmax", "linear") else None


def logits_model(model):
    """The classifier cut before its final softmax (same layers, names and weights), or None if it has none.

    Handles a ``Softmax`` layer at the end and a last layer with ``activation="softmax"`` (this project's
    heads and ``keras.applications``'); int8 artifacts are built from it so the softmax stays in float.
    """
    if output_activation_of(model) != "softmax":
        return None
    last = model.layers[-1]
    head_input = layer_input(model, last)
    if isinstance(last, layers.Softmax):
        return keras.Model(model.inputs, head_input, name=model.name)
    config = {**last.get_config(), "activation": "linear"}
    head = type(last).from_config(config)
    outputs = head(head_input)
    head.set_weights(last.get_weights())
    return keras.Model(model.inputs, outputs, name=model.name)


def _node_in_graph(model, layer):
    """``layer``'s call in ``model``'s own graph, or None. A layer shared by two graphs (a ``keras.applications``
    model put behind a preprocessing front replays its layers) has one call per graph, and ``layer.input`` /
    ``layer.output`` are the first one's, which are not connected to ``model.inputs``."""
    nodes = getattr(model, "_nodes", None)
    inbound = getattr(layer, "_inbound_nodes", ())
    if nodes is None or len(inbound) < 2:
        return None
    for index, node in enumerate(inbound):
        if f"{id(layer)}_ib-{index}" in nodes:
            return node
    return None


def _unpack(tensors):
    tensors = list(tensors)
    return tensors[0] if len(tensors) == 1 else tensors


def layer_input(model, layer):
    """``layer``'s input tensor(s) in ``model``'s graph (see ``_node_in_graph``)."""
    node = _node_in_graph(model, layer)
    return layer.input if node is None else _unpack(node.input_tensors)


def layer_output(model, layer):
    """``layer``'s output tensor(s) in ``model``'s graph (see ``_node_in_graph``)."""
    node = _node_in_graph(model, layer)
    return layer.output if node is None else _unpack(node.output_tensors)


def preprocessing_of(model) -> str:
    """The preprocessing mode inside ``model`` (its ``preprocess`` layer, or the legacy custom layer), else none."""
    for layer in model.layers:
        if isinstance(layer, InputPreprocessing):
            return layer.mode
        if layer.name != PREPROCESS_LAYER or not isinstance(layer, layers.Rescaling):
            continue
        scale, offset = _per_channel(layer.scale), _per_channel(layer.offset)
        for mode, spec in PREPROCESSING.items():
            if spec is not None and np.allclose(spec.scale, scale, rtol=1e-5) and \
                    np.allclose(spec.offset, offset, rtol=1e-5, atol=1e-6):
                return mode
    return "none"


def _per_channel(value) -> tuple[float, float, float]:
    array = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (3,))
    return (float(array[0]), float(array[1]), float(array[2]))


def with_preprocessing(model, mode: str):
    """A model without in-model preprocessing (``keras.applications``, your own) behind ``mode``'s ``preprocess``
    layer, so it takes RGB pixels 0-255 like every model this project builds; layers and weights are shared."""
    _check_preprocessing(mode)
    if preprocessing_of(model) != "none":
        raise InvalidArgumentError(f"{model.name} already has in-model preprocessing ({preprocessing_of(model)})")
    if mode == "none":
        return model
    if len(model.inputs) != 1:
        raise InvalidArgumentError(f"{model.name} has {len(model.inputs)} inputs; preprocessing needs one image input")
    raw = keras.Input(shape=model.inputs[0].shape[1:], name="input")
    front = preprocessing_block(raw, mode)
    try:  # the graph replayed on the new input keeps it flat (layer names stay top-level, for the diagnosis)
        outputs = model._run_through_graph([front], operation_fn=lambda operation: operation)
    except AttributeError:
        outputs = model(front)
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    return keras.Model(raw, outputs, name=model.name)
