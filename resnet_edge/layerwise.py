"""Which layers of an int8 artifact drift most from the float Keras model: the diagnosis for a failed parity check.

Both models run on the same images; every artifact tensor whose name carries a Keras layer name (tf2onnx
keeps ``resnet18_1/conv2_block1_out_1/Relu:0``, TFLite fuses ``.../conv2_block1_out_1/Relu;.../Add``) is
compared with that layer's float output. A tensor named after several layers (a fused conv+bn+relu) stands
for the latest of them, the one whose output it is. The error of a layer is ``1 - cosine similarity`` of the
flattened per-image activations, averaged over images: scale-free, so layers of any range compare.

Errors accumulate down the network, so by default a layer is ranked by the error it *adds*: its error minus
the largest error among its nearest compared ancestors (floored at 0). ``cumulative=True`` ranks by the raw
error instead.

The artifact's tensors come from its backend's intermediates hook (a registry row field): ONNX Runtime runs
an unoptimized copy with every tensor as an output, LiteRT keeps every intermediate tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._lazy import lazy_import
from .errors import DataError, ModelFileError
from .metrics import row_cosine
from .models.naming import keras_layers, layer_of

BATCH_SIZE = 16
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Artifact:
    """An artifact ready to run: its candidate tensors per Keras layer (in execution order) and a runner."""

    candidates: dict[str, list[str]]
    run: Runner
    input_shape: tuple[int | None, ...]
    fixed_batch: int | None = None


@dataclass
class _Match:
    """How one artifact tensor lines up with a Keras layer's output."""

    tensor: str
    order: tuple[int, ...]


@dataclass
class _Scores:
    """Per-image cosine similarities per layer, gathered batch by batch so no activation is kept whole."""

    cosines: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, layer: str, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref = reference.reshape(len(reference), -1).astype(np.float64)
        cand = candidate.reshape(len(candidate), -1).astype(np.float64)
        self.cosines.setdefault(layer, []).append(row_cosine(ref, cand))

    def errors(self) -> dict[str, float]:
        return {name: float(1.0 - np.mean(np.concatenate(parts))) for name, parts in self.cosines.items()}


def worst_layers(model, artifact_path: str | os.PathLike[str], images: np.ndarray, top: int = 5,
                 *, cumulative: bool = False) -> list[tuple[str, float]]:
    """The ``top`` Keras layers whose int8 counterparts in ``artifact_path`` lose the most, worst first.

    ``model`` is the float functional Keras model, ``artifact_path`` an int8 ``.onnx`` (QDQ) or ``.tflite``,
    ``images`` RGB ``uint8`` NHWC. Returns ``(layer name, error)`` pairs (see the module docstring for the
    error); ``[]`` when no tensor of the artifact maps to a layer or the artifact takes another input size.
    An unreadable artifact is a ModelFileError; images that do not fit the model are a DataError.
    """
    errors = layer_errors(model, artifact_path, images)
    if not cumulative:
        errors = _added_errors(model, errors)
    ranked = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    return ranked[: max(int(top), 0)]


def layer_errors(model, artifact_path: str | os.PathLike[str], images: np.ndarray) -> dict[str, float]:
    """``1 - cosine`` per compared Keras layer (cumulative: each includes the error of all layers before it)."""
    path = Path(artifact_path)
    if not path.is_file():
        raise ModelFileError(f"{path}: artifact not found")
    images = np.asarray(images)
    model_shape = tuple(int(v) for v in model.input_shape[1:])
    if images.ndim != 4 or tuple(images.shape[1:]) != model_shape:
        raise DataError(f"images of shape {images.shape[1:]} do not fit the model's input {model_shape}")
    model = _matching(model, path)
    layers = keras_layers(model)
    if not layers or not len(images):
        return {}
    artifact = _open(path, layers, model)
    fits = all(a in (None, m) for a, m in zip(artifact.input_shape, model_shape, strict=False))
    if not artifact.candidates or len(artifact.input_shape) != len(model_shape) or not fits:
        return {}
    return _compare(model, layers, artifact, images)


def _matching(model, path: Path):
    """The model cut before its softmax when the artifact outputs logits, so its last layer compares like with like."""
    from .artifact import read_metadata
    from .models.reference import matching_reference

    try:
        metadata = read_metadata(path)
    except ModelFileError:
        return model
    return matching_reference(model, metadata.output_activation if metadata else None)


def _output_layer(model) -> str | None:
    """The layer producing the model's only output, which maps to the artifact's only output."""
    if len(model.outputs) != 1:
        return None
    history = getattr(model.outputs[0], "_keras_history", None)
    operation = getattr(history, "operation", None) or (history[0] if history else None)
    return getattr(operation, "name", None)


def _open(path: Path, layers: dict[str, int], model) -> _Artifact:
    """The artifact through its backend's intermediates hook, its tensors grouped by the Keras layer they stand for."""
    from .predictor import open_intermediates

    opened = open_intermediates(path)
    candidates: dict[str, list[str]] = {}
    for tensor, name in opened.tensors:
        layer = layer_of(name, layers)
        if layer is not None:
            candidates.setdefault(layer, []).append(tensor)
    output_layer = _output_layer(model)
    if output_layer in layers and opened.output is not None:
        candidates[output_layer] = [opened.output]
    wanted = sorted({t for names in candidates.values() for t in names})
    return _Artifact(candidates, lambda batch: opened.run(batch, wanted), opened.input_shape, opened.fixed_batch)


def _batches(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


def _align(value: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The axis order that brings an artifact tensor to a Keras output shape (NCHW to NHWC first), or None."""
    orders = [tuple(range(value.ndim))]
    if value.ndim == 4:
        orders.insert(0, (0, 2, 3, 1))
    for order in orders:
        moved = tuple(value.shape[i] for i in order)
        if moved == shape or (moved[:1] == shape[:1] and _squeezed(moved[1:]) == _squeezed(shape[1:])):
            return order
    return None


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _compare(model, layers: dict[str, int], artifact: _Artifact, images: np.ndarray) -> dict[str, float]:
    keras = lazy_import("keras", extra="export")
    from .models.resnet import layer_output

    names = [name for name in sorted(layers, key=layers.get) if name in artifact.candidates]
    probe = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                        [layer_output(model, model.get_layer(name)) for name in names])
    size = artifact.fixed_batch or BATCH_SIZE
    matches: dict[str, _Match] | None = None
    scores = _Scores()
    for batch in _batches(images, size):
        if artifact.fixed_batch and len(batch) != artifact.fixed_batch:
            break
        reference = probe(batch.astype(np.float32), training=False)
        reference = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
        values = artifact.run(batch)
        if matches is None:
            matches = _choose(names, reference, artifact.candidates, values)
        for name, ref in zip(names, reference, strict=True):
            match = matches.get(name)
            if match is None or match.tensor not in values:
                continue
            value = values[match.tensor].transpose(match.order)
            if value.size != ref.size:
                continue
            scores.add(name, ref, value.reshape(ref.shape))
    return scores.errors()


def _choose(names: list[str], reference: list[np.ndarray], candidates: dict[str, list[str]],
            values: dict[str, np.ndarray]) -> dict[str, _Match]:
    """Per layer, the last candidate tensor (in execution order) whose shape fits the Keras output."""
    chosen: dict[str, _Match] = {}
    for name, ref in zip(names, reference, strict=True):
        for tensor in reversed(candidates[name]):
            if tensor not in values:
                continue
            order = _align(values[tensor], tuple(ref.shape))
            if order is not None:
                chosen[name] = _Match(tensor, order)
                break
    return chosen


def _added_errors(model, errors: dict[str, float]) -> dict[str, float]:
    """Each layer's error minus the worst error among its nearest compared ancestors (floored at 0)."""
    parents = layer_parents(model)
    added: dict[str, float] = {}
    for name, error in errors.items():
        inherited = max((errors[a] for a in _nearest(name, parents, errors)), default=0.0)
        added[name] = max(error - inherited, 0.0)
    return added


def layer_parents(model) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {}
    for layer in model.layers:
        try:
            nodes = layer._inbound_nodes
            parents[layer.name] = [n.operation.name for node in nodes[:1] for n in node.parent_nodes]
        except (AttributeError, IndexError):
            parents[layer.name] = []
    return parents


def _nearest(name: str, parents: dict[str, list[str]], compared: dict[str, float]) -> set[str]:
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(parents.get(name, []))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in compared:
            found.add(current)
        else:
            stack.extend(parents.get(current, []))
    return found


__all__ = ["layer_errors", "layer_of", "worst_layers"]
