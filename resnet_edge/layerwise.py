"""Which layers of an int8 artifact drift most from the float Keras model: the diagnosis for a failed parity check.

Both models run on the same images; every artifact tensor whose name carries a Keras layer name (tf2onnx
keeps ``resnet18_1/conv2_block1_out_1/Relu:0``, TFLite fuses ``.../conv2_block1_out_1/Relu;.../Add``) is
compared with that layer's float output. A tensor named after several layers (a fused conv+bn+relu) stands
for the latest of them, the one whose output it is. The error of a layer is ``1 - cosine similarity`` of the
flattened per-image activations, averaged over images: scale-free, so layers of any range compare.

Errors accumulate down the network, so by default a layer is ranked by the error it *adds*: its error minus
the largest error among its nearest compared ancestors (floored at 0). ``cumulative=True`` ranks by the raw
error instead.

ONNX: a copy of the graph in memory gets the tensors as extra outputs and runs unoptimized on the CPU, so
every Q/DQ pair stays in place (the simulated int8 values, equal to ORT's fused kernels up to rounding).
TFLite: the interpreter keeps every intermediate tensor; int8 ones are dequantized with their own scale.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._lazy import lazy_import
from ._quiet import quiet
from .errors import DataError, ModelFileError
from .parity import row_cosine

BATCH_SIZE = 16
_SCOPE_SUFFIX = re.compile(r"_\d+$")
_GENERATED = re.compile(r"__\d+(:\d+)?$")
_QDQ_SUFFIX = re.compile(r"(_QuantizeLinear_Output|_DequantizeLinear_Output|_QuantizeLinear_Input)(_\d+)?$")

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
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        artifact = _open_onnx(path, layers, model)
    elif suffix == ".tflite":
        artifact = _open_tflite(path, layers, model)
    else:
        raise ModelFileError(f"{path}: layer-wise comparison reads .onnx or .tflite files, not {suffix or 'this'}")
    fits = all(a in (None, m) for a, m in zip(artifact.input_shape, model_shape, strict=False))
    if not artifact.candidates or len(artifact.input_shape) != len(model_shape) or not fits:
        return {}
    return _compare(model, layers, artifact, images)


def _matching(model, path: Path):
    """The model cut before its softmax when the artifact outputs logits, so its last layer compares like with like."""
    from .artifact import read_metadata
    from .parity import matching_reference

    try:
        metadata = read_metadata(path)
    except ModelFileError:
        return model
    return matching_reference(model, metadata.output_activation if metadata else None)


def keras_layers(model) -> dict[str, int]:
    """Names of the layers with one float output, by position in the model (a topological order)."""
    found: dict[str, int] = {}
    for position, layer in enumerate(model.layers):
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue
        if not isinstance(output, (list, tuple, dict)):
            found[layer.name] = position
    return found


def _output_layer(model) -> str | None:
    """The layer producing the model's only output, which maps to the artifact's only output."""
    if len(model.outputs) != 1:
        return None
    history = getattr(model.outputs[0], "_keras_history", None)
    operation = getattr(history, "operation", None) or (history[0] if history else None)
    return getattr(operation, "name", None)


def layer_of(tensor_name: str, layers: dict[str, int]) -> str | None:
    """The Keras layer a converter tensor name stands for: the latest layer named in it, or None.

    Name scopes carry the layer name, possibly with a ``_1`` uniquifying suffix; TFLite joins the names of
    fused ops with ``;``. (tf2onnx's own helper tensors, ``<op>__<n>``, are skipped by the caller: they hold
    a layer's *input* in another layout.)
    """
    best: str | None = None
    for part in tensor_name.split(";"):
        for segment in part.split("/"):
            segment = segment.split(":")[0]
            name = segment if segment in layers else _SCOPE_SUFFIX.sub("", segment)
            if name in layers and (best is None or layers[name] > layers[best]):
                best = name
    return best


def _open_onnx(path: Path, layers: dict[str, int], model) -> _Artifact:
    onnx = lazy_import("onnx", extra="export")
    ort = lazy_import("onnxruntime", extra="onnxruntime")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelFileError(f"{path}: expected one image input, found {len(inputs)}")
    live = {inputs[0].name}
    candidates: dict[str, list[str]] = {}
    for node in graph.node:
        if not any(name in live for name in node.input):
            continue
        live.update(node.output)
        if node.op_type == "QuantizeLinear":
            continue
        for tensor in node.output:
            base = _QDQ_SUFFIX.sub("", tensor)
            if _GENERATED.search(base):
                continue
            layer = layer_of(base, layers)
            if layer is not None:
                candidates.setdefault(layer, []).append(tensor)
    graph_outputs = [o.name for o in graph.output]
    output_layer = _output_layer(model)
    if output_layer in layers and len(graph_outputs) == 1:
        candidates[output_layer] = graph_outputs
    wanted = {t for names in candidates.values() for t in names}
    graph.output.extend(onnx.ValueInfoProto(name=t) for t in sorted(wanted - set(graph_outputs)))

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        with quiet():
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: onnxruntime cannot load it ({message[:200]})") from exc
    (model_input,) = session.get_inputs()
    names = [o.name for o in session.get_outputs() if o.name in wanted]
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(model_input.type, np.float32)
    batch_dim = model_input.shape[0] if model_input.shape else None

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(names, {model_input.name: batch.astype(dtype)})
        return {n: v for n, v in zip(names, values, strict=True) if np.issubdtype(np.asarray(v).dtype, np.floating)}

    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in model_input.shape[1:])
    return _Artifact(candidates, run, shape, batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None)


def _open_tflite(path: Path, layers: dict[str, int], model) -> _Artifact:
    from .preprocess import quantize
    from .runtime.tflite import tensor_quantization

    interpreter_module = lazy_import("ai_edge_litert.interpreter", extra="tflite")
    try:
        with quiet():
            interpreter = interpreter_module.Interpreter(model_content=path.read_bytes(),
                                                         experimental_preserve_all_tensors=True)
            interpreter.allocate_tensors()
            produced = {int(i) for op in interpreter._get_ops_details() for i in op["outputs"]}
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: LiteRT cannot load it ({str(exc).splitlines()[0][:200]})") from exc
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    (model_input,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    candidates: dict[str, list[str]] = {}
    for index in sorted(produced):
        detail = details.get(index)
        if detail is None or not _dequantizable(detail):
            continue
        layer = layer_of(detail["name"], layers)
        if layer is not None:
            candidates.setdefault(layer, []).append(str(index))
    output_layer = _output_layer(model)
    if output_layer in layers and len(outputs) == 1 and _dequantizable(outputs[0]):
        candidates[output_layer] = [str(outputs[0]["index"])]
    input_quantization = tensor_quantization(model_input)
    input_dtype = np.dtype(model_input["dtype"])
    state = {"batch": int(model_input["shape"][0])}

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        if len(batch) != state["batch"]:
            interpreter.resize_tensor_input(model_input["index"], list(batch.shape), strict=False)
            interpreter.allocate_tensors()
            state["batch"] = len(batch)
        if np.issubdtype(input_dtype, np.integer) and input_quantization is not None:
            feed = quantize(batch, input_quantization, input_dtype.name)
        else:
            feed = batch.astype(input_dtype)
        interpreter.set_tensor(model_input["index"], feed)
        interpreter.invoke()
        wanted = {int(t) for names in candidates.values() for t in names}
        return {str(i): _dequantized(interpreter.get_tensor(i), details[i]) for i in wanted}

    signature = model_input.get("shape_signature")
    dynamic = signature is not None and len(signature) and int(signature[0]) == -1
    shape = tuple(int(d) for d in model_input["shape"][1:])
    return _Artifact(candidates, run, shape, None if dynamic else int(model_input["shape"][0]))


def _dequantizable(detail: dict) -> bool:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return True
    scales = detail.get("quantization_parameters", {}).get("scales")
    per_tensor = scales is None or len(scales) <= 1
    return np.issubdtype(dtype, np.integer) and bool(detail["quantization"][0]) and per_tensor


def _dequantized(values: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


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
    names = [name for name in sorted(layers, key=layers.get) if name in artifact.candidates]
    probe = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, [model.get_layer(name).output for name in names])
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
