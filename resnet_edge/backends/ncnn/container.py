"""ModelMetadata of an NCNN model: a sidecar ``model.ncnn.json`` beside ``model.ncnn.param`` and ``model.ncnn.bin``.

pnnx drops the ONNX ``metadata_props``, and NCNN's own tools rewrite the ``.param`` without the lines after its
last layer (where ``load_param`` would tolerate a comment), so the metadata travels as a third file. It records
the ``.bin``'s sha256: NCNN loads a ``.bin`` of another model of the same size without complaint (garbage
weights, return code 0), so the backend checks it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ...atomic import write_bytes
from ...errors import ModelFileError
from ...metadata import MAX_METADATA_BYTES, ModelMetadata, require_file

SIDECAR = ".json"  # model.ncnn.param -> model.ncnn.json
WEIGHTS = ".bin"  # model.ncnn.param -> model.ncnn.bin


def sidecar_path(param: Path) -> Path:
    return Path(param).with_suffix(SIDECAR)


def weights_path(param: Path) -> Path:
    return Path(param).with_suffix(WEIGHTS)


def weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_ncnn(path: str | os.PathLike[str]) -> ModelMetadata | None:
    """The metadata in the sidecar beside ``model.ncnn.param`` (None when there is no sidecar)."""
    path = Path(path)
    require_file(path)
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    if sidecar.stat().st_size > MAX_METADATA_BYTES:
        raise ModelFileError(f"{sidecar}: metadata is {sidecar.stat().st_size / 1e6:.1f} MB, more than the "
                             f"{MAX_METADATA_BYTES / 2**20:.0f} MB any artifact of resnet-edge carries")
    return ModelMetadata.from_json(sidecar.read_bytes(), str(sidecar))


def write_ncnn(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Write (replace) the sidecar of ``model.ncnn.param`` atomically; the ``.param`` and ``.bin`` are not touched."""
    path = Path(path)
    require_file(path)
    write_bytes(sidecar_path(path), metadata.to_json().encode())
