"""ModelMetadata in an ONNX file: an entry of its ``metadata_props`` (written by ``interchange.embed_metadata``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..._lazy import lazy_import
from ...atomic import write_bytes
from ...errors import ModelFileError, ResnetEdgeError
from ...interchange import embed_metadata
from ...metadata import METADATA_KEY, ModelMetadata, require_file


def read_onnx_props(props: dict[str, str], source: str) -> ModelMetadata | None:
    text = props.get(METADATA_KEY)
    return None if text is None else ModelMetadata.from_json(text, source)


def write_onnx(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    onnx = lazy_import("onnx", extra="export")
    path = Path(path)
    require_file(path)
    proto = onnx.load(str(path))
    embed_metadata(proto, metadata)
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
