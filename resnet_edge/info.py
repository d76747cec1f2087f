"""``resnet-edge info``: what a model file or artifact is, from its embedded metadata (and, for a Keras file, the
model: depth, parameters, multiply-adds)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .artifact import read_metadata
from .metadata import require_file
from .registry import KERAS_SUFFIXES, companions_of


def describe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, metadata and, for a Keras model file, its architecture figures."""
    path = Path(path)
    require_file(path)
    metadata = read_metadata(path)
    files = [path, *(companion for companion in companions_of(path) if companion.is_file())]
    summary: dict[str, Any] = {"path": str(path), "size_bytes": sum(f.stat().st_size for f in files),
                               "files": [str(f) for f in files]}
    if path.suffix.lower() in KERAS_SUFFIXES:
        from .models.io import load_model
        from .models.resnet import SPECS, count_macs

        model, metadata = load_model(path)
        spec = SPECS.get(model.name)
        summary.update(model=model.name, parameters=int(model.count_params()), macs=count_macs(model),
                       depth=None if spec is None else int(model.name.removeprefix("resnet")),
                       block="bottleneck" if spec and spec.bottleneck else "basic" if spec else None)
    if metadata is not None:
        summary["metadata"] = json.loads(metadata.to_json())
    return summary
