"""Which Keras layer a converter's tensor stands for: the names every runtime's int8 tools map back to layers.

tf2onnx keeps ``resnet18_1/conv2_block1_out_1/Relu:0``, TFLite fuses ``.../conv2_block1_out_1/Relu;.../Add``,
OpenVINO keeps the ONNX node names: each carries the Keras layer name, possibly with a ``_1`` suffix. Used by the
layer-wise diagnosis and by every converter that keeps ``float_layers`` out of the integer graph.
"""

from __future__ import annotations

import re

_SCOPE_SUFFIX = re.compile(r"_\d+$")


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
