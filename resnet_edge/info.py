"""``resnet-edge info``: what a model file or artifact is, from its embedded metadata (and, for a Keras file, the
model: depth, parameters, multiply-adds).

A ``.keras`` file is a zip of ``config.json`` (the layer graph, every layer's input shape included), the weights
(HDF5) and this project's metadata: its figures are read from those without importing Keras or building the model
(a fraction of a second instead of TensorFlow's import and a model load). Files this reading does not cover (a
legacy ``.h5``, a ``.keras`` with no metadata inside, a layer graph without shapes) are loaded with Keras.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .artifact import read_metadata
from .errors import ModelFileError
from .metadata import METADATA_KEY, ModelMetadata, require_file
from .registry import KERAS_SUFFIXES, companions_of

KERAS_CONFIG, KERAS_WEIGHTS, KERAS_METADATA = "config.json", "model.weights.h5", f"{METADATA_KEY}.json"
WEIGHT_GROUPS = ("layers", "vars")  # the model's own variables in the weights file (not the optimizer's)


def describe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, metadata and, for a Keras model file, its architecture figures."""
    path = Path(path)
    require_file(path)
    keras_file = path.suffix.lower() in KERAS_SUFFIXES
    fast = keras_figures(path) if keras_file else None
    metadata = fast.pop("metadata") if fast else read_metadata(path)
    files = [path, *(companion for companion in companions_of(path) if companion.is_file())]
    summary: dict[str, Any] = {"path": str(path), "size_bytes": sum(f.stat().st_size for f in files),
                               "files": [str(f) for f in files]}
    if fast:
        summary.update(fast)
    elif keras_file:
        from .models.io import load_model
        from .models.resnet import count_macs

        model, metadata = load_model(path)
        summary.update(model=model.name, parameters=int(model.count_params()), macs=count_macs(model),
                       **_depth(model.name, [layer.name for layer in model.layers]))
    if metadata is not None:
        summary["metadata"] = json.loads(metadata.to_json())
    return summary


def keras_figures(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A ``.keras`` file's model name, depth, parameters and multiply-adds, and its metadata, read from the zip
    without Keras; None when the file needs Keras to answer (no metadata inside, no shapes in its graph)."""
    path = Path(path)
    if path.suffix.lower() != ".keras" or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {KERAS_CONFIG, KERAS_WEIGHTS, KERAS_METADATA} <= names:
                return None
            config = json.loads(archive.read(KERAS_CONFIG))
            metadata = ModelMetadata.from_json(archive.read(KERAS_METADATA), str(path))
            parameters = _parameter_count(path, archive, archive.getinfo(KERAS_WEIGHTS))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a readable Keras model ({type(exc).__name__})") from exc
    model = config.get("config", {}) if isinstance(config, dict) else {}
    layers = model.get("layers")
    if not isinstance(layers, list):
        return None
    try:
        macs = multiply_adds(layers)
    except (KeyError, TypeError, ValueError, IndexError):  # a layer written differently: Keras will know
        macs = None
    if macs is None:
        return None
    name = str(model.get("name", ""))
    return {"model": name, "parameters": parameters, "macs": macs, **_depth(name, list(_layer_names(layers))),
            "metadata": metadata}


def _depth(name: str, layer_names: list[str]) -> dict[str, Any]:
    """A ResNet's depth (from its name, ``resnet50``) and block kind (a bottleneck block has a third conv)."""
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None:
        return {"depth": None, "block": None}
    block = "bottleneck" if "conv2_block1_3_conv" in layer_names else \
        "basic" if "conv2_block1_2_conv" in layer_names else None
    return {"depth": int(match.group(1)) if block else None, "block": block}


def _layer_names(layers: list[dict]) -> Iterator[str]:
    for layer in layers:
        yield str(layer.get("config", {}).get("name", layer.get("name", "")))


def _parameter_count(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> int:
    """The number of weights in the file's HDF5 entry (its datasets' shapes; no weight is read)."""
    import h5py

    if member.compress_type == zipfile.ZIP_STORED:  # Keras stores it: HDF5 reads the zip's bytes in place
        with open(path, "rb") as raw:
            raw.seek(member.header_offset)
            header = raw.read(30)
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            start = member.header_offset + 30 + name_length + extra_length
            with h5py.File(_Window(raw, start, member.file_size), "r") as weights:
                return _count(weights)
    with h5py.File(io.BytesIO(archive.read(member)), "r") as weights:  # a rewritten, compressed archive
        return _count(weights)


def _count(weights) -> int:
    import h5py

    total = 0

    def add(_: str, item) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += int(item.size)

    for group in WEIGHT_GROUPS:
        if group in weights:
            weights[group].visititems(add)
    return total


class _Window(io.RawIOBase):
    """A read-only file that is a byte range of another (an uncompressed zip entry, for h5py)."""

    def __init__(self, raw, start: int, size: int) -> None:
        super().__init__()
        self.raw, self.start, self.size, self.position = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        wanted = max(0, min(len(buffer), self.size - self.position))
        self.raw.seek(self.start + self.position)
        count = self.raw.readinto(memoryview(buffer)[:wanted])
        self.position += count
        return count


def multiply_adds(layers: list[dict]) -> int | None:
    """Multiply-accumulates of one image through a Keras layer graph (config.json's ``layers``): Conv2D,
    depthwise and separable convolutions and Dense, from each layer's recorded input shape and its settings.
    None when a counted layer has no recorded shape or the input size is not fixed."""
    total = 0
    for layer in layers:
        config = layer.get("config", {})
        if isinstance(config.get("layers"), list):  # a model inside the model
            inner = multiply_adds(config["layers"])
            if inner is None:
                return None
            total += inner
            continue
        kind = layer.get("class_name")
        if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
            continue
        shape = _input_shape(layer)
        if shape is None or any(not isinstance(v, int) for v in shape[1:]):
            return None
        if kind == "Dense":
            total += math.prod(shape[1:-1]) * shape[-1] * int(config["units"])
            continue
        first = config.get("data_format", "channels_last") == "channels_first"
        channels, spatial = (shape[1], shape[2:4]) if first else (shape[3], shape[1:3])
        kernel, strides = _pair(config["kernel_size"]), _pair(config.get("strides", 1))
        dilation = _pair(config.get("dilation_rate", 1))
        outputs = [_output_side(side, k, s, d, config.get("padding", "valid"))
                   for side, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)]
        positions = outputs[0] * outputs[1]
        if kind == "Conv2D":
            total += positions * int(config["filters"]) * kernel[0] * kernel[1] * channels // int(config.get("groups", 1))
        else:
            multiplier = int(config.get("depth_multiplier", 1))
            total += positions * channels * multiplier * kernel[0] * kernel[1]
            if kind == "SeparableConv2D":
                total += positions * channels * multiplier * int(config["filters"])
    return int(total)


def _input_shape(layer: dict) -> list | None:
    """The shape (batch first) a layer was built for: its build config, else its first call's input."""
    shape = (layer.get("build_config") or {}).get("input_shape")
    if shape is None:
        try:
            shape = layer["inbound_nodes"][0]["args"][0]["config"]["shape"]
        except (KeyError, IndexError, TypeError):
            return None
    return list(shape) if isinstance(shape, list) and len(shape) >= 2 else None


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _output_side(side: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "same":
        return -(-side // stride)
    return (side - dilation * (kernel - 1) - 1) // stride + 1
