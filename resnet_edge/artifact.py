"""Where ModelMetadata lives inside each kind of artifact, and how it is read back.

One reader and one writer per container: Keras (a JSON entry in the ``.keras`` zip, or an HDF5
attribute in ``.h5``), ONNX (``metadata_props``), TFLite (a flatbuffer ``metadata`` entry, which a
stock LiteRT interpreter ignores), TensorRT (a length-prefixed JSON header before the engine). The
registry's backend rows name them (``Container``); ``read_metadata``/``write_metadata`` go by suffix.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np

from ._lazy import lazy_import
from .atomic import atomic_path, write_bytes
from .errors import ModelFileError, ResnetEdgeError
from .metadata import MAX_METADATA_BYTES, METADATA_KEY, ModelMetadata
from .registry import resolve, row_for_file

KERAS_ENTRY = f"{METADATA_KEY}.json"
ENGINE_MAGIC = b"RNEDGE\x00\x01"
_ENGINE_LENGTH = struct.Struct("<Q")
ENGINE_HEADER_LIMIT = MAX_METADATA_BYTES


def require_file(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: file is empty")


# Keras ---------------------------------------------------------------------------------------

def embed_keras(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Add the metadata to a freshly saved (still temporary) ``.keras`` or ``.h5`` file."""
    path = Path(path)
    if path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(KERAS_ENTRY, metadata.to_json())
    else:
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs[METADATA_KEY] = metadata.to_json()


def write_keras(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Rewrite a ``.keras``/``.h5`` file with ``metadata`` (other entries copied as they are)."""
    path = Path(path)
    require_file(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
                for item in source.infolist():
                    if item.filename != KERAS_ENTRY:
                        target.writestr(item, source.read(item.filename))
        else:
            shutil.copyfile(path, tmp)
        embed_keras(tmp, metadata)


def read_keras(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    require_file(path)
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                if KERAS_ENTRY not in archive.namelist():
                    return None
                return ModelMetadata.from_json(archive.read(KERAS_ENTRY), str(path))
        except zipfile.BadZipFile as exc:
            raise ModelFileError(f"{path}: not a Keras model (corrupt or truncated .keras archive)") from exc
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(METADATA_KEY)
    except OSError as exc:
        raise ModelFileError(f"{path}: not a Keras model (cannot open as HDF5)") from exc
    return None if text is None else ModelMetadata.from_json(text, str(path))


# ONNX ----------------------------------------------------------------------------------------

def embed_onnx(model_proto, metadata: ModelMetadata) -> None:
    """Set (replace) the metadata entry of an in-memory ``onnx.ModelProto``."""
    kept = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()


def read_onnx_props(props: dict[str, str], source: str) -> ModelMetadata | None:
    text = props.get(METADATA_KEY)
    return None if text is None else ModelMetadata.from_json(text, source)


def write_onnx(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    onnx = lazy_import("onnx", extra="export")
    path = Path(path)
    require_file(path)
    proto = onnx.load(str(path))
    embed_onnx(proto, metadata)
    write_bytes(path, proto.SerializeToString())


def read_onnx(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    require_file(path)
    try:
        import onnx
    except ImportError:
        onnx = None
    try:
        if onnx is not None:
            proto = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in proto.metadata_props}
        else:
            session = lazy_import("onnxruntime", extra="onnxruntime").InferenceSession(str(path))
            props = session.get_modelmeta().custom_metadata_map
    except ResnetEdgeError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    return read_onnx_props(props, str(path))


# TFLite --------------------------------------------------------------------------------------

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


# TensorRT engine -----------------------------------------------------------------------------

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


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata | None:
    """The metadata embedded in any supported artifact (None when the artifact has none)."""
    container = row_for_file(path).container
    return None if container is None else resolve(container.read)(Path(path))


def write_metadata(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Replace the metadata embedded in an artifact, atomically (relabelling, or a container's round trip)."""
    container = row_for_file(path).container
    if container is None:
        raise ModelFileError(f"{path}: this kind of file carries no metadata")
    resolve(container.write)(Path(path), metadata)
