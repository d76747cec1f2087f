"""Any artifact's ModelMetadata, read or replaced through the container its runtime's row names.

Each runtime folder keeps its own container (``backends/<name>/container.py``: a JSON entry in a ``.keras`` zip,
ONNX ``metadata_props``, a TFLite flatbuffer entry, an engine header, an IR ``rt_info`` entry, a sidecar);
these two functions go by the file's suffix.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelFileError
from .metadata import ModelMetadata
from .registry import backend_for_file, load_target


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata | None:
    """The metadata embedded in any supported artifact (None when the artifact has none)."""
    container = backend_for_file(path).container
    return None if container is None else load_target(container.read)(Path(path))


def write_metadata(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Replace the metadata embedded in an artifact, atomically (relabelling, or a container's round trip)."""
    container = backend_for_file(path).container
    if container is None:
        raise ModelFileError(f"{path}: this kind of file carries no metadata")
    load_target(container.write)(Path(path), metadata)
