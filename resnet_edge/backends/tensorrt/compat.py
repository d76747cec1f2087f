"""Engine compatibility policy: which engines this TensorRT and GPU may load, and which batch sizes they take.

Pure functions of an engine's metadata and the current versions, so they run without TensorRT or a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import DataError, ModelFileError
from ...metadata import ModelMetadata

HARDWARE_COMPATIBILITY_MIN_CC = (8, 0)
"""Hardware-compatible (Ampere-plus) engines run on compute capability 8.0 and newer."""


def _major_minor(version: str) -> tuple[int, ...]:
    """``"10.8.1.post1"`` -> (10, 8): engines are tied to TensorRT's major.minor."""
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _capability(text: str) -> tuple[int, ...]:
    """``"8.9"`` -> (8, 9), comparable with :data:`HARDWARE_COMPATIBILITY_MIN_CC`."""
    return tuple(int(p) for p in str(text).split(".")[:2] if p.isdigit())


def engine_info(metadata: ModelMetadata | None) -> dict[str, Any]:
    """The ``extra["tensorrt"]`` block of an engine's metadata ({} for a plain engine)."""
    if metadata is None:
        return {}
    info = metadata.extra.get("tensorrt")
    return dict(info) if isinstance(info, dict) else {}


def check_engine_compatibility(
    metadata: ModelMetadata | None, trt_version: str, compute_capability: str, source: str = "engine"
) -> None:
    """Refuse an engine built by another TensorRT major.minor or for another GPU generation.

    An engine without metadata cannot be checked and is left to TensorRT.
    """
    info = engine_info(metadata)
    built_version = info.get("version")
    if built_version and _major_minor(built_version) != _major_minor(trt_version):
        raise ModelFileError(
            f"{source}: engine was built with TensorRT {built_version}, this is TensorRT {trt_version}; "
            "rebuild it here (engines are tied to the TensorRT version)"
        )
    built_cc = info.get("compute_capability")
    if not built_cc or _capability(built_cc) == _capability(compute_capability):
        return
    gpu = info.get("gpu") or "another GPU"
    if info.get("hardware_compatibility"):
        if _capability(compute_capability) >= HARDWARE_COMPATIBILITY_MIN_CC:
            return
        raise ModelFileError(
            f"{source}: engine was built for Ampere or newer GPUs (hardware compatibility), this GPU has "
            f"compute capability {compute_capability}; rebuild it here"
        )
    raise ModelFileError(
        f"{source}: engine was built for {gpu} (compute capability {built_cc}), this GPU has compute "
        f"capability {compute_capability}; rebuild it here, or export with hardware compatibility"
    )


def check_batch(batch: int, profile: Sequence[int], source: str = "engine") -> None:
    """A batch size outside the engine's optimization profile is a DataError naming the profile."""
    low, opt, high = profile
    if not low <= batch <= high:
        raise DataError(
            f"{source}: batch of {batch} is outside the engine's optimization profile "
            f"(min {low}, opt {opt}, max {high}); split the batch or rebuild with --batch MIN,OPT,MAX"
        )
