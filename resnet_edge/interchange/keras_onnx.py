"""Keras to ONNX through tf2onnx (opset 13-18, dynamic batch), canonical names, and the ONNX save/check step."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .._lazy import import_tensorflow, lazy_import
from .._memo import KeepLast
from .._quiet import quiet
from ..errors import ExportError, InvalidArgumentError, first_line
from ..metadata import METADATA_KEY, ModelMetadata

OPSETS = range(13, 19)
INPUT_NAME = "input"
ONNX_TOOLS = ("resnet-edge", "tensorflow", "keras", "tf2onnx", "onnx")
CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


_converted = KeepLast()  # the last tf2onnx conversion, serialized


def to_onnx_proto(model, opset: int):
    """The Keras model as an fp32 ``onnx.ModelProto`` with input ``input`` (N, H, W, C) and dynamic N.

    The last conversion is kept, so exporting onnx, onnx-fp16 and onnx-int8 of one model in one process
    runs tf2onnx once.
    """
    if opset not in OPSETS:
        raise InvalidArgumentError(f"opset must be between {OPSETS.start} and {OPSETS.stop - 1}, got {opset}")
    from ..models.reference import model_digest

    onnx = lazy_import("onnx", extra="export")
    serialized = _converted.get((model_digest(model), opset), lambda: _convert(model, opset))
    return onnx.ModelProto.FromString(serialized)


def to_logits_proto(model, opset: int):
    """The classifier as ONNX ending in logits: the shared conversion with its final Softmax node removed.

    Cutting the converted graph reuses the conversion the other ONNX formats already made; a graph that
    does not end in a last-axis Softmax is converted from ``logits_model`` instead.
    """
    proto = to_onnx_proto(model, opset)
    if _strip_softmax(proto):
        return proto
    from ..models.resnet import logits_model

    return to_onnx_proto(logits_model(model), opset)


def _strip_softmax(proto) -> bool:
    """Make the Softmax that produces the only graph output produce nothing: its input takes the output's name."""
    graph = proto.graph
    if len(graph.output) != 1:
        return False
    name = graph.output[0].name
    softmax = next((node for node in graph.node if name in node.output), None)
    if softmax is None or softmax.op_type != "Softmax":
        return False
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    rank = len(graph.output[0].type.tensor_type.shape.dim)
    if axis not in (-1, rank - 1):
        return False
    logits = softmax.input[0]
    graph.node.remove(softmax)
    for node in graph.node:
        node.output[:] = [name if o == logits else o for o in node.output]
        node.input[:] = [name if i == logits else i for i in node.input]
    kept = [info for info in graph.value_info if info.name != logits]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return True


def _convert(model, opset: int) -> bytes:
    tf = import_tensorflow()
    tf2onnx = lazy_import("tf2onnx", extra="export")
    height, width, channels = (int(v) for v in model.input_shape[1:])
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    try:
        with quiet():
            try:
                with _tf2onnx_graph_copies_off():
                    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
            except Exception:  # an optimizer pass failed: the stock path skips that pass and goes on
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert {model.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    canonicalize_names(proto)
    return proto.SerializeToString()


@contextlib.contextmanager
def _tf2onnx_graph_copies_off() -> Iterator[None]:
    """Stop tf2onnx deep-copying the whole graph, weights included, before each optimizer pass.

    It copies so that it can skip a pass that raises; for ResNet-50 the ~50 copies are 9 s of a 25 s
    conversion. Any value of ``TF2ONNX_CATCH_ERRORS`` turns the copies off (tf2onnx 1.17 compares the
    variable's name, not its value, with "TRUE"), and a failing pass then raises instead.
    """
    previous = os.environ.get(CATCH_ERRORS)
    os.environ[CATCH_ERRORS] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[CATCH_ERRORS]
        else:
            os.environ[CATCH_ERRORS] = previous


_GENERATED = re.compile(r"__\d+")


def canonicalize_names(proto) -> None:
    """Give tf2onnx's output a canonical node order and names, so one model always gives the same bytes.

    tf2onnx names the nodes and constants its optimizers insert (``name__N``) from a process-wide
    counter, in an order that varies between runs. Nodes are re-ordered topologically with ties broken
    by content, generated names are renumbered in that order (names from the Keras graph are kept), and
    generated duplicates (identical constants, identical computations) are merged so no tie is left.
    """
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    producers = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list] = {}
    waiting = {}
    for node in graph.node:
        produced = [name for name in node.input if name in producers]
        waiting[id(node)] = len(produced)
        for name in produced:
            consumers.setdefault(name, []).append(node)
    renamed: dict[str, str] = {}
    constants: dict[str, str] = {}  # content digest -> canonical name

    def constant_name(name: str) -> str:
        tensor = type(initializers[name])()
        tensor.CopyFrom(initializers[name])
        tensor.name = ""
        digest = hashlib.sha256(tensor.SerializeToString()).hexdigest()
        return constants.setdefault(digest, f"const__{len(constants) + 1}")

    def resolved(name: str) -> str:
        if name in renamed or not _GENERATED.search(name):
            return renamed.get(name, name)
        if name in initializers:
            renamed[name] = constant_name(name)
            return renamed[name]
        return name

    def node_key(node) -> tuple:
        attributes = b"".join(a.SerializeToString() for a in node.attribute)
        own = "" if _GENERATED.search(node.name) else node.name
        return node.op_type, own, tuple(resolved(n) for n in node.input), attributes

    ready = [node for node in graph.node if waiting[id(node)] == 0]
    ordered, emitted, visited = [], {}, 0
    while ready:
        ready.sort(key=node_key)
        node = ready.pop(0)
        visited += 1
        key = node_key(node)
        twin = emitted.get(key)
        mergeable = twin is not None and _GENERATED.search(node.name) and not graph_outputs & set(node.output)
        if mergeable:
            for name, twin_name in zip(node.output, twin.output, strict=True):
                renamed[name] = renamed.get(twin_name, twin_name)
        else:
            emitted[key] = node
            ordered.append(node)
            if _GENERATED.search(node.name):
                node.name = f"{node.op_type}__{len(ordered)}"
            for index, name in enumerate(node.output):
                if _GENERATED.search(name):
                    renamed[name] = f"{node.name}:{index}"
        for name in node.output:
            for consumer in consumers.get(name, []):
                waiting[id(consumer)] -= 1
                if waiting[id(consumer)] == 0:
                    ready.append(consumer)
    if visited != len(graph.node):
        raise ExportError("the converted ONNX graph has a cycle")
    for node in ordered:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    kept: dict[str, object] = {}
    for tensor in graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
        kept.setdefault(tensor.name, tensor)
    used = {name for node in ordered for name in node.input} | graph_outputs
    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name = renamed.get(info.name, info.name)
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = "batch"
    copies = [type(node).FromString(node.SerializeToString()) for node in ordered]
    del graph.node[:]
    graph.node.extend(copies)
    tensors = sorted((type(t).FromString(t.SerializeToString()) for n, t in kept.items() if n in used),
                     key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(tensors)
    infos = {i.name: type(i).FromString(i.SerializeToString()) for i in graph.value_info}
    del graph.value_info[:]
    graph.value_info.extend(infos[name] for name in sorted(infos))


def save_onnx(proto, metadata: ModelMetadata, path: Path) -> ModelMetadata:
    """Embed metadata, run the full ONNX checker, and write ``path``."""
    onnx = lazy_import("onnx", extra="export")
    embed_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {first_line(exc, 200)}") from exc
    onnx.save(proto, str(path))
    return metadata


def embed_metadata(model_proto, metadata: ModelMetadata) -> None:
    """Set (replace) the metadata entry of an in-memory ``onnx.ModelProto`` (its ``metadata_props``)."""
    kept = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
