"""``load()``: an artifact as a Predictor, the backend chosen by its registry row, the device by what works."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DeviceError, InvalidArgumentError, ModelFileError
from ..registry import BACKENDS, DEVICES, backend_row, resolve, row_for_file
from .base import Backend, Intermediates, Prediction, PredictionRun, Predictor


def backend_class(name: str) -> type[Backend]:
    return resolve(backend_row(name).target)


def backend_for(path: str | os.PathLike[str]) -> str:
    """The backend name for an artifact, from its suffix."""
    return row_for_file(path).name


def load(
    path: str | os.PathLike[str], device: str = "auto", backend: str | None = None, threads: int | None = None
) -> Predictor:
    """Open an artifact as a Predictor; ``device="auto"`` takes the first device that really works."""
    path = Path(path)
    if device not in DEVICES:
        raise InvalidArgumentError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InvalidArgumentError("threads must be at least 1")
    row = backend_row(backend) if backend else row_for_file(path)
    if path.suffix.lower() not in row.suffixes + row.also_runs:
        raise ModelFileError(f"{path}: the {row.name} backend runs {', '.join(row.suffixes + row.also_runs)} files")
    cls = resolve(row.target)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    if device != "auto":
        if device not in row.devices:
            raise DeviceError(f"the {row.name} backend runs on {', '.join(row.devices)}, not {device}")
        return Predictor(cls.for_device(device)(path, device, threads))
    available = cls.available_devices()
    errors = []
    for candidate in (d for d in row.devices if d in available):
        try:
            return Predictor(cls.for_device(candidate)(path, candidate, threads))
        except DeviceError as exc:
            errors.append(str(exc))
    raise DeviceError(f"no usable device for {row.name}: {'; '.join(errors) or 'none available'}")


def open_intermediates(path: str | os.PathLike[str]) -> Intermediates:
    """The artifact opened with its intermediate tensors readable (backends whose row has the hook)."""
    row = row_for_file(path)
    if row.intermediates is None:
        with_hook = sorted(s for r in BACKENDS.values() if r.intermediates for s in r.suffixes)
        raise ModelFileError(f"{path}: layer-wise comparison reads {', '.join(with_hook)} files, not {row.suffixes[0]}")
    return resolve(row.intermediates)(Path(path))


__all__ = ["Backend", "Intermediates", "Prediction", "PredictionRun", "Predictor", "backend_class", "backend_for",
           "load", "open_intermediates"]
