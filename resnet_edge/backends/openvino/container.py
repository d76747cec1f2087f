"""ModelMetadata inside an OpenVINO IR: an entry of the ``<rt_info>`` element of the ``.xml``.

Reading needs no OpenVINO (the ``.xml`` is parsed with ElementTree); embedding sets the entry on an
in-memory ``openvino.Model`` before it is saved, and :func:`write_openvino` rewrites it in a saved ``.xml``.
The weights (``.bin`` beside the ``.xml``) are not touched by any of these.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ...atomic import atomic_path
from ...errors import ModelFileError
from ...metadata import METADATA_KEY, ModelMetadata, require_file

RT_INFO = "rt_info"
FRAMEWORK = "framework"  # where OpenVINO's ONNX reader puts an ONNX file's metadata_props


def _parse(path: Path) -> ET.ElementTree:
    """The IR's XML tree; parsed from one buffer, since expat fed in chunks (``ET.parse``) takes time quadratic in
    the longest token: a 50 MB metadata attribute took 43 s to read, now under a second."""
    require_file(path)
    try:
        tree = ET.ElementTree(ET.fromstring(path.read_bytes()))
    except (ET.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not an OpenVINO IR (corrupt or truncated .xml: {exc})") from exc
    if tree.getroot().tag != "net":
        raise ModelFileError(f"{path}: not an OpenVINO IR (root element <{tree.getroot().tag}>, expected <net>)")
    return tree


def read_openvino(path: str | os.PathLike[str]) -> ModelMetadata | None:
    """The metadata in an IR ``.xml`` (None when it has none); a corrupt file is a ModelFileError."""
    path = Path(path)
    rt_info = _parse(path).getroot().find(RT_INFO)
    entry = rt_info.find(METADATA_KEY) if rt_info is not None else None
    if entry is None:
        return None
    text = entry.get("value")
    if text is None:
        raise ModelFileError(f"{path}: the {METADATA_KEY} entry of <rt_info> has no value")
    return ModelMetadata.from_json(text, str(path))


def embed_openvino(ov_model: Any, metadata: ModelMetadata) -> None:
    """Set (replace) the metadata entry of an in-memory ``openvino.Model``; ``save_model`` writes it to the xml."""
    ov_model.set_rt_info(metadata.to_json(), [METADATA_KEY])


def read_openvino_model(ov_model: Any, source: str) -> ModelMetadata | None:
    """The metadata of a model OpenVINO has read: an IR's own entry, or an ONNX file's ``metadata_props`` one."""
    for key in ([METADATA_KEY], [FRAMEWORK, METADATA_KEY]):
        if ov_model.has_rt_info(key):
            return ModelMetadata.from_json(ov_model.get_rt_info(key).astype(str), source)
    return None


def write_openvino(path: str | os.PathLike[str], metadata: ModelMetadata) -> Path:
    """Rewrite the metadata entry of an existing IR ``.xml`` atomically (the ``.bin`` is left as it is)."""
    path = Path(path)
    tree = _parse(path)
    root = tree.getroot()
    rt_info = root.find(RT_INFO)
    if rt_info is None:
        rt_info = ET.SubElement(root, RT_INFO)
    entry = rt_info.find(METADATA_KEY)
    if entry is None:
        entry = ET.SubElement(rt_info, METADATA_KEY)
    entry.attrib.clear()
    entry.set("value", metadata.to_json())
    with atomic_path(path) as tmp:
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
    return path


__all__ = ["embed_openvino", "read_openvino", "read_openvino_model", "write_openvino"]
