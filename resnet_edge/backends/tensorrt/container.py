"""ModelMetadata before a TensorRT engine: ``MAGIC | uint64 length | metadata JSON | serialized engine``."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ...atomic import write_bytes
from ...errors import ModelFileError
from ...metadata import MAX_METADATA_BYTES, ModelMetadata, require_file

ENGINE_MAGIC = b"RNEDGE\x00\x01"
_ENGINE_LENGTH = struct.Struct("<Q")
ENGINE_HEADER_LIMIT = MAX_METADATA_BYTES


def pack_engine(engine: bytes, metadata: ModelMetadata) -> bytes:
    """``MAGIC | uint64 length | metadata JSON | serialized engine``."""
    header = metadata.to_json().encode()
    return ENGINE_MAGIC + _ENGINE_LENGTH.pack(len(header)) + header + engine


def unpack_engine(blob: bytes, source: str, require_engine: bool = True) -> tuple[ModelMetadata | None, memoryview]:
    """Split a file into (metadata, engine bytes); a plain engine without header has no metadata."""
    view = memoryview(blob)
    if bytes(view[: len(ENGINE_MAGIC)]) != ENGINE_MAGIC:
        return None, view
    start = len(ENGINE_MAGIC) + _ENGINE_LENGTH.size
    if len(view) < start:
        raise ModelFileError(f"{source}: truncated engine header")
    (length,) = _ENGINE_LENGTH.unpack(view[len(ENGINE_MAGIC) : start])
    if length > ENGINE_HEADER_LIMIT:
        raise ModelFileError(f"{source}: corrupt engine header (it claims {length} bytes of metadata, "
                             f"more than the {ENGINE_HEADER_LIMIT} any artifact of resnet-edge carries)")
    if start + length > len(view):
        raise ModelFileError(f"{source}: corrupt or truncated engine header")
    metadata = ModelMetadata.from_json(bytes(view[start : start + length]), source)
    engine = view[start + length :]
    if require_engine and len(engine) == 0:
        raise ModelFileError(f"{source}: engine header present but the engine itself is missing (truncated)")
    return metadata, engine


def read_engine(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    require_file(path)
    with open(path, "rb") as handle:
        head = handle.read(len(ENGINE_MAGIC) + _ENGINE_LENGTH.size + ENGINE_HEADER_LIMIT)
    return unpack_engine(head, str(path), require_engine=False)[0]


def write_engine(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    path = Path(path)
    require_file(path)
    write_bytes(path, pack_engine(bytes(unpack_engine(path.read_bytes(), str(path))[1]), metadata))
