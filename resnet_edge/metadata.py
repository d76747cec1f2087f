"""ModelMetadata: what an artifact needs to be run correctly, carried inside the artifact as JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError, ModelFileError, first_line

SCHEMA_VERSION = 1
METADATA_KEY = "resnet_edge"
RESIZE_DESCRIPTIONS = {
    "squash": "the whole frame stretched to the input size",
    "center-crop": "the largest centred region of the input's aspect ratio",
    "letterbox": "the whole frame fitted, padded with black",
}
RESIZE_POLICIES = tuple(RESIZE_DESCRIPTIONS)
# Bounds on what an artifact may declare, checked before anything is allocated or parsed recursively: a
# hostile or corrupt file otherwise costs a 30 GB allocation, or a RecursionError from deeply nested JSON.
MAX_SIDE = 16384  # pixels per side of a model input
MAX_INPUT_ELEMENTS = 2**28  # values in one input tensor (1 GiB of float32)
MAX_METADATA_BYTES = 4 * 2**20  # a 21k-class label list is under 1 MB
MAX_METADATA_DEPTH = 32  # what we write nests 3 deep
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_TEXT_FIELDS = ("model", "preprocessing", "format", "precision", "layout", "color_order", "input_dtype")


def check_input_shape(shape: Sequence[int], source: str, what: str = "input") -> tuple[int, ...]:
    """A declared input shape (``(H, W, C)``, or NHWC with a static batch) as ints, or a one-line ModelFileError.

    Every side must be a positive integer, height and width at most ``MAX_SIDE`` and all of it at most
    ``MAX_INPUT_ELEMENTS`` values: checked when an artifact is loaded, before a frame is resized to it.
    """
    if any(isinstance(v, bool) or not isinstance(v, int) for v in shape):
        raise ModelFileError(f"{source}: {what} shape {list(shape)} is not made of whole numbers")
    dims = tuple(int(v) for v in shape)
    if any(v < 1 for v in dims):
        raise ModelFileError(f"{source}: {what} shape {list(dims)} has a side of zero or less")
    if max(dims[-3:-1], default=0) > MAX_SIDE:
        raise ModelFileError(f"{source}: {what} shape {list(dims)} is absurd (more than {MAX_SIDE} pixels a side)")
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise ModelFileError(f"{source}: {what} shape {list(dims)} is absurd (more than {MAX_INPUT_ELEMENTS} values)")
    return dims


def _nesting_depth(text: str, limit: int) -> int:
    """How deep the JSON's arrays and objects nest (strings skipped), counting no further than ``limit + 1``."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
    return deepest


def _parse_bounded(text: str | bytes, source: str) -> Any:
    """``json.loads`` behind a size and a nesting-depth limit, so hostile metadata is one line, never a RecursionError."""
    if len(text) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{source}: metadata is {len(text) / 2**20:.1f} MB, more than the "
                             f"{MAX_METADATA_BYTES // 2**20} MB any artifact of resnet-edge carries")
    try:
        if isinstance(text, bytes | bytearray):
            text = text.decode("utf-8")
        if _nesting_depth(text, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
            raise ModelFileError(f"{source}: metadata nests more than {MAX_METADATA_DEPTH} levels deep")
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{source}: metadata is not valid JSON ({first_line(exc, 120)})") from exc


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {str(value)[:40]!r}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {str(value)[:40]!r}")
    return float(value)


def check_policy(policy: str) -> str:
    """A resize policy name, or a one-line error listing the valid ones."""
    if policy not in RESIZE_POLICIES:
        raise InvalidArgumentError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, not {policy!r}")
    return policy


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


TASKS = ("classifier", "features", "embedding")


@dataclass(frozen=True)
class OutputInfo:
    """One model output, in the order the model was built: its name, its shape per image (``(classes,)``,
    ``(dim,)`` or ``(H, W, C)``) and, for a feature map, its stride (input pixels per output pixel)."""

    name: str
    shape: tuple[int, ...]
    stride: int | None = None


@dataclass(frozen=True)
class ModelMetadata:
    """Input contract, labels and provenance of a model or exported artifact.

    ``preprocessing`` is applied *inside* the model, so every artifact takes RGB pixels in
    ``input_range``; the host only resizes, reorders channels and casts. ``output_activation`` is
    ``"softmax"`` when a classifier outputs probabilities, ``"linear"`` for logits, None when unknown.
    ``resize`` is how a frame of another shape reaches ``input_shape`` (one of ``RESIZE_POLICIES``);
    artifacts written before it was recorded were squashed. ``task`` is what the model is for (``TASKS``):
    a classifier (labelled top-k), features (named feature maps, e.g. a detector's c3-c5 backbone) or an
    embedding (one vector per image, L2-normalised when ``normalized``); ``outputs`` lists the outputs in the
    order the model was built, which every backend returns them in.
    """

    model: str
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...] = ()
    preprocessing: str = "scale"
    format: str = "keras"
    precision: str = "fp32"
    layout: str = "NHWC"
    color_order: str = "RGB"
    input_dtype: str = "float32"
    input_range: tuple[float, float] = (0.0, 255.0)
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None
    output_activation: str | None = None
    resize: str = "squash"
    source_sha256: str | None = None
    tools: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    outputs: tuple[OutputInfo, ...] = ()
    normalized: bool = False
    schema: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def kind(self) -> str:
        """The task, also for artifacts written before it was recorded: labels or a softmax make a classifier,
        several or spatial outputs features, one flat output without labels an embedding."""
        if self.task is not None:
            return self.task
        if self.labels or self.output_activation == "softmax":
            return "classifier"
        if len(self.outputs) > 1 or any(len(o.shape) > 1 for o in self.outputs):
            return "features"
        return "embedding" if self.outputs else "classifier"

    def replace(self, **changes: Any) -> ModelMetadata:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), so identical metadata gives identical bytes."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "metadata") -> ModelMetadata:
        """Parse and validate; never evaluates anything, and refuses oversized or deeply nested JSON before parsing.

        Every field is checked for its type and range (labels are strings, the input shape is sane, numbers
        are finite), so what comes out can be used without further checks.
        """
        raw = _parse_bounded(text, source)
        if not isinstance(raw, dict):
            raise ModelFileError(f"{source}: metadata is not a JSON object")
        schema = raw.get("schema", SCHEMA_VERSION)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise ModelFileError(f"{source}: metadata schema is not a positive integer")
        if not isinstance(raw.get("tools", {}), dict) or not isinstance(raw.get("extra", {}), dict):
            raise ModelFileError(f"{source}: metadata is malformed (tools and extra must be objects)")
        if schema > SCHEMA_VERSION:
            shown = schema if schema < 10**6 else "from far in the future"
            raise ModelFileError(
                f"{source}: metadata schema {shown} is newer than this resnet-edge "
                f"understands ({SCHEMA_VERSION}); upgrade resnet-edge"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"model", "input_shape"} - raw.keys()
        if missing:
            raise ModelFileError(f"{source}: metadata lacks {', '.join(sorted(missing))}")
        values = {k: v for k, v in raw.items() if k in known}
        try:
            for key in _TEXT_FIELDS:
                if key in values and not isinstance(values[key], str):
                    raise ValueError(f"{key} must be a string")
            shape = values["input_shape"]
            if not isinstance(shape, list) or len(shape) != 3:
                raise ValueError("input_shape must be (height, width, channels)")
            values["input_shape"] = check_input_shape([_whole(v, "input_shape") for v in shape], source,
                                                      "metadata input")
            labels = values.get("labels", [])
            if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
                raise ValueError("labels must be a list of strings")
            values["labels"] = tuple(labels)
            low, high = (_finite(v, "input_range") for v in values.get("input_range", (0.0, 255.0)))
            if not low < high:
                raise ValueError(f"input_range must rise, not [{low:g}, {high:g}]")
            values["input_range"] = (low, high)
            for key in ("input_quantization", "output_quantization"):
                if values.get(key) is not None:
                    q = values[key]
                    if not isinstance(q, dict):
                        raise ValueError(f"{key} must be an object")
                    scale, zero_point = _finite(q["scale"], f"{key} scale"), _whole(q["zero_point"], f"{key} zero point")
                    if scale <= 0 or not -(2**31) <= zero_point < 2**31:
                        raise ValueError(f"{key} needs a positive scale and a 32-bit zero point")
                    values[key] = Quantization(scale, zero_point)
            if not isinstance(values.get("output_activation"), str | None):
                raise ValueError("output_activation must be a string")
            if values.get("resize", "squash") not in RESIZE_POLICIES:
                raise ValueError(f"resize must be one of {', '.join(RESIZE_POLICIES)}")
            if not isinstance(values.get("source_sha256"), str | None):
                raise ValueError("source_sha256 must be a string")
            _check_extra(values.get("extra", {}))
            if values.get("task") is not None and values["task"] not in TASKS:
                raise ValueError(f"task must be one of {', '.join(TASKS)}")
            if not isinstance(values.get("normalized", False), bool):
                raise ValueError("normalized must be true or false")
            values["outputs"] = _outputs(values.get("outputs", []))
            return cls(**values)
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelFileError(f"{source}: metadata is malformed ({first_line(exc, 160)})") from exc


def _outputs(raw: Any) -> tuple[OutputInfo, ...]:
    if not isinstance(raw, list) or len(raw) > 64:
        raise ValueError("outputs must be a list (of at most 64 outputs)")
    found = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("each output needs a name")
        shape = item.get("shape", [])
        if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
            raise ValueError("an output's shape must have 1 to 3 dimensions per image")
        dims = tuple(_whole(v, "output shape") for v in shape)
        if any(d < 1 or d > 2**24 for d in dims):
            raise ValueError(f"output shape {list(dims)} is out of range")
        stride = item.get("stride")
        found.append(OutputInfo(item["name"], dims, None if stride is None else _whole(stride, "output stride")))
    return tuple(found)


def _check_extra(extra: dict[str, Any]) -> None:
    """The ``extra`` entries other modules read without checking: each of the type they expect."""
    layers = extra.get("float_layers", [])
    if not isinstance(layers, list) or not all(isinstance(v, str) for v in layers):
        raise ValueError("extra.float_layers must be a list of strings")
    for key in ("weights_bytes", "calibration_images"):
        if key in extra and (isinstance(extra[key], bool) or not isinstance(extra[key], int) or extra[key] < 0):
            raise ValueError(f"extra.{key} must be a whole number")
    if not isinstance(extra.get("inference_precision", ""), str):
        raise ValueError("extra.inference_precision must be a string")


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the given distributions (those not installed are left out)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_file(path: Path) -> None:
    """An artifact file that exists and is not empty, or a one-line ModelFileError."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: file is empty")
