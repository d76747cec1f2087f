"""ModelMetadata: what an artifact needs to be run correctly, carried inside the artifact as JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from .errors import InvalidArgumentError, ModelFileError

SCHEMA_VERSION = 1
METADATA_KEY = "resnet_edge"
RESIZE_DESCRIPTIONS = {
    "squash": "the whole frame stretched to the input size",
    "center-crop": "the largest centred region of the input's aspect ratio",
    "letterbox": "the whole frame fitted, padded with black",
}
RESIZE_POLICIES = tuple(RESIZE_DESCRIPTIONS)


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


@dataclass(frozen=True)
class ModelMetadata:
    """Input contract, labels and provenance of a model or exported artifact.

    ``preprocessing`` is applied *inside* the model, so every artifact takes RGB pixels in
    ``input_range``; the host only resizes, reorders channels and casts. ``output_activation`` is
    ``"softmax"`` when a classifier outputs probabilities, ``"linear"`` for logits, None when unknown.
    ``resize`` is how a frame of another shape reaches ``input_shape`` (one of ``RESIZE_POLICIES``);
    artifacts written before it was recorded were squashed.
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
    schema: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def replace(self, **changes: Any) -> ModelMetadata:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), so identical metadata gives identical bytes."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "metadata") -> ModelMetadata:
        """Parse and validate; never evaluates anything."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{source}: metadata is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise ModelFileError(f"{source}: metadata is not a JSON object")
        if not isinstance(raw.get("schema", SCHEMA_VERSION), int):
            raise ModelFileError(f"{source}: metadata schema is not an integer")
        if not isinstance(raw.get("tools", {}), dict) or not isinstance(raw.get("extra", {}), dict):
            raise ModelFileError(f"{source}: metadata is malformed (tools and extra must be objects)")
        if raw.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise ModelFileError(
                f"{source}: metadata schema {raw['schema']} is newer than this resnet-edge "
                f"understands ({SCHEMA_VERSION}); upgrade resnet-edge"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"model", "input_shape"} - raw.keys()
        if missing:
            raise ModelFileError(f"{source}: metadata lacks {', '.join(sorted(missing))}")
        values = {k: v for k, v in raw.items() if k in known}
        try:
            values["input_shape"] = tuple(int(v) for v in values["input_shape"])
            values["labels"] = tuple(str(v) for v in values.get("labels", ()))
            values["input_range"] = tuple(float(v) for v in values.get("input_range", (0.0, 255.0)))
            for key in ("input_quantization", "output_quantization"):
                if values.get(key) is not None:
                    q = values[key]
                    values[key] = Quantization(float(q["scale"]), int(q["zero_point"]))
            if not isinstance(values.get("output_activation"), str | None):
                raise ValueError("output_activation must be a string")
            if values.get("resize", "squash") not in RESIZE_POLICIES:
                raise ValueError(f"resize must be one of {', '.join(RESIZE_POLICIES)}")
            if len(values["input_shape"]) != 3:
                raise ValueError("input_shape must be (height, width, channels)")
            return cls(**values)
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelFileError(f"{source}: metadata is malformed ({exc})") from exc


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
