"""ModelMetadata in a TFLite flatbuffer: a named ``metadata`` entry, which a stock LiteRT interpreter ignores."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..._lazy import lazy_import
from ...atomic import write_bytes
from ...errors import ModelFileError
from ...metadata import METADATA_KEY, ModelMetadata, require_file


def embed_tflite(flatbuffer: bytes, metadata: ModelMetadata) -> bytes:
    """Return the flatbuffer with the metadata as a named ``metadata`` entry."""
    schema = lazy_import("ai_edge_litert.schema_py_generated", extra="tflite")
    flatbuffer_utils = lazy_import("ai_edge_litert.tools.flatbuffer_utils", extra="tflite")

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_KEY]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata.to_json().encode(), np.uint8)  # packed as one vector: a list packs per byte
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_tflite_bytes(flatbuffer: bytes, source: str) -> ModelMetadata | None:
    schema = lazy_import("ai_edge_litert.schema_py_generated", extra="tflite")
    try:
        if not schema.Model.ModelBufferHasIdentifier(flatbuffer, 0):
            raise ModelFileError(f"{source}: not a TFLite model (no TFL3 identifier)")
        model = schema.Model.GetRootAs(flatbuffer, 0)
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            if entry.Name().decode() == METADATA_KEY:
                data = model.Buffers(entry.Buffer()).DataAsNumpy()
                return ModelMetadata.from_json(bytes(data), source)
    except (IndexError, struct.error, AttributeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{source}: not a TFLite model (corrupt or truncated flatbuffer)") from exc
    return None


def read_tflite(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    require_file(path)
    return read_tflite_bytes(path.read_bytes(), str(path))


def write_tflite(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    path = Path(path)
    require_file(path)
    write_bytes(path, embed_tflite(path.read_bytes(), metadata))
