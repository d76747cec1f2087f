"""Metadata survives every container, is validated on read and is never evaluated."""

from __future__ import annotations

import json
import zipfile

import pytest

from resnet_edge import artifact
from resnet_edge.errors import ModelFileError
from resnet_edge.metadata import ModelMetadata, Quantization

META = ModelMetadata(model="resnet18", input_shape=(32, 32, 3), labels=("a", "b"),
                     input_quantization=Quantization(1.0, -128), output_activation="softmax", extra={"note": "x"})


def test_json_round_trip_is_canonical() -> None:
    text = META.to_json()
    assert ModelMetadata.from_json(text) == META
    assert ModelMetadata.from_json(text).to_json() == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"model": "x"}', "lacks input_shape"),
        ('{"model": "x", "input_shape": [1, 2]}', "malformed"),
        ('{"model": "x", "input_shape": [1, 2, 3], "schema": 99}', "newer"),
        ('{"model": "x", "input_shape": [1, 2, 3], "output_activation": 5}', "malformed"),
        ('{"model": "x", "input_shape": [1, 2, 3], "resize": "stretch"}', "resize must be one of squash"),
        ('{"model": "x", "input_shape": "__import__(\'os\').system(\'false\')"}', "malformed"),
    ],
)
def test_bad_metadata_is_rejected_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ModelFileError, match=message) as info:
        ModelMetadata.from_json(text, "m.onnx")
    assert "\n" not in str(info.value)


def test_artifacts_from_before_the_resize_policy_keep_squash() -> None:
    data = json.loads(META.replace(resize="letterbox").to_json())
    assert ModelMetadata.from_json(json.dumps(data)).resize == "letterbox"
    del data["resize"]
    assert ModelMetadata.from_json(json.dumps(data)).resize == "squash"


def test_unknown_keys_from_newer_writers_are_ignored() -> None:
    data = json.loads(META.to_json()) | {"future_field": 1}
    assert ModelMetadata.from_json(json.dumps(data)) == META


def test_engine_header_round_trip(tmp_path) -> None:
    blob = artifact.pack_engine(b"ENGINE", META)
    metadata, engine = artifact.unpack_engine(blob, "x")
    assert metadata == META and bytes(engine) == b"ENGINE"
    path = tmp_path / "m.engine"
    path.write_bytes(blob)
    assert artifact.read_metadata(path) == META


def test_keras_zip_entry_round_trip(tmp_path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    artifact.embed_keras(path, META)
    assert artifact.read_keras(path) == META


@pytest.mark.parametrize("suffix", [".keras", ".onnx", ".tflite", ".engine"])
def test_garbage_files_are_one_line_errors(tmp_path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00garbage" * 3)
    try:
        result = artifact.read_metadata(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
    else:
        assert result is None  # a plain engine without our header carries no metadata


def test_unknown_suffix(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="unknown model suffix"):
        artifact.read_metadata(tmp_path / "model.pt")
