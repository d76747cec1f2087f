"""Metadata survives every container, is validated on read and is never evaluated."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from resnet_edge import artifact
from resnet_edge.backends.tensorrt import container as engine_container
from resnet_edge.errors import ModelFileError
from resnet_edge.metadata import ModelMetadata, Quantization
from resnet_edge.models import io as keras_container

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
    blob = engine_container.pack_engine(b"ENGINE", META)
    metadata, engine = engine_container.unpack_engine(blob, "x")
    assert metadata == META and bytes(engine) == b"ENGINE"
    path = tmp_path / "m.engine"
    path.write_bytes(blob)
    assert artifact.read_metadata(path) == META


def test_keras_zip_entry_round_trip(tmp_path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    keras_container.embed_keras(path, META)
    assert keras_container.read_keras(path) == META


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


# Hostile metadata: bounded before it is parsed, every field checked, one line from every container ---------------

GOOD = json.loads(META.to_json())
HOSTILE = {
    "a list": ("[1, 2, 3]", "not a JSON object"),
    "nested 100000 deep": ("[" * 100_000 + "]" * 100_000, "nests more than 32 levels deep"),
    "objects nested 100000 deep": ('{"a":' * 100_000 + "1" + "}" * 100_000, "nests more than 32 levels deep"),
    "50 MB long": (json.dumps(GOOD | {"extra": {"pad": "x" * (50 * 2**20)}}), "50.0 MB, more than the 4 MB"),
    "a 0x0 input": (json.dumps(GOOD | {"input_shape": [0, 0, 3]}), r"input shape \[0, 0, 3\] has a side of zero"),
    "a negative side": (json.dumps(GOOD | {"input_shape": [-5, 32, 3]}), "has a side of zero or less"),
    "a 1e9 float side": (json.dumps(GOOD | {"input_shape": [1e9, 1e9, 3]}), "input_shape must be a whole number"),
    "a 1e9 side": (json.dumps(GOOD | {"input_shape": [10**9, 10**9, 3]}), "absurd .more than 16384 pixels a side"),
    "too many values": (json.dumps(GOOD | {"input_shape": [16384, 16384, 3]}), "absurd .more than 268435456 values"),
    "a bool side": (json.dumps(GOOD | {"input_shape": [True, 32, 3]}), "input_shape must be a whole number"),
    "labels that are not strings": (json.dumps(GOOD | {"labels": [1, {"a": 2}, None]}), "labels must be a list of"),
    "labels that are a string": (json.dumps(GOOD | {"labels": "abc"}), "labels must be a list of strings"),
    "a schema of 10**100": (json.dumps(GOOD | {"schema": 10**100}), "schema from far in the future is newer"),
    "a schema of 0": (json.dumps(GOOD | {"schema": 0}), "schema is not a positive integer"),
    "a NaN input range": (json.dumps(GOOD | {"input_range": [float("nan"), 1.0]}), "input_range must be a finite"),
    "a falling input range": (json.dumps(GOOD | {"input_range": [255, 0]}), "input_range must rise"),
    "a zero quantization scale": (json.dumps(GOOD | {"input_quantization": {"scale": 0, "zero_point": 0}}),
                                  "positive scale"),
    "a 1e300 zero point": (json.dumps(GOOD | {"input_quantization": {"scale": 1, "zero_point": 1e300}}),
                           "zero point must be a whole number"),
    "a 5000-digit number": ('{"model": "m", "input_shape": [' + "9" * 5000 + ", 32, 3]}", "not valid JSON"),
    "a model name that is a number": (json.dumps(GOOD | {"model": 7}), "model must be a string"),
    "float_layers of numbers": (json.dumps(GOOD | {"extra": {"float_layers": [1, 2]}}), "float_layers must be"),
    "not UTF-8": (b'{"model": "\xff\xfe"}', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_metadata_is_one_line(case: str) -> None:
    text, message = HOSTILE[case]
    with pytest.raises(ModelFileError, match=message) as info:
        ModelMetadata.from_json(text, "m.onnx")
    assert "\n" not in str(info.value) and str(info.value).startswith("m.onnx: ") and len(str(info.value)) < 300


def test_what_every_exporter_writes_still_reads() -> None:
    wide = META.replace(labels=tuple(f'class "{i}" [x]' for i in range(21_000)), input_shape=(224, 224, 3),
                        extra={"float_layers": ["conv1"], "weights_bytes": 5, "inference_precision": "f32",
                               "tensorrt": {"version": "10.3"}, "calibration_images": 300})
    assert ModelMetadata.from_json(wide.to_json()) == wide


def _hostile_containers(tmp_path, text: str) -> list:
    """The same raw metadata text inside each container, written the way each one stores it."""
    import struct

    onnx = pytest.importorskip("onnx")
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools import flatbuffer_utils

    data = text.encode()
    paths = []
    graph = onnx.helper.make_graph([], "g", [], [])
    proto = onnx.helper.make_model(graph)
    proto.metadata_props.add(key="resnet_edge", value=text)
    paths.append(tmp_path / "m.onnx")
    paths[-1].write_bytes(proto.SerializeToString())
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [], [schema.BufferT(), schema.BufferT()]
    model.buffers[1].data = np.frombuffer(data, np.uint8)  # a list of 50 M ints takes minutes to pack
    entry = schema.MetadataT()
    entry.name, entry.buffer = b"resnet_edge", 1
    model.metadata = [entry]
    paths.append(tmp_path / "m.tflite")
    paths[-1].write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    paths.append(tmp_path / "m.engine")
    paths[-1].write_bytes(engine_container.ENGINE_MAGIC + struct.pack("<Q", len(data)) + data + b"ENGINE")
    paths.append(tmp_path / "m.xml")
    value = text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    paths[-1].write_text(f'<?xml version="1.0"?><net name="m"><rt_info><resnet_edge value="{value}"/></rt_info></net>')
    return paths


@pytest.mark.parametrize("case", ["a list", "nested 100000 deep", "50 MB long", "a 0x0 input", "a 1e9 side",
                                  "labels that are not strings", "a schema of 10**100"])
def test_hostile_metadata_in_every_container_is_one_line(tmp_path, case: str) -> None:
    text, message = HOSTILE[case]
    for path in _hostile_containers(tmp_path, text):
        with pytest.raises(ModelFileError) as info:
            artifact.read_metadata(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), path
        expected = "claims 5242" if path.suffix == ".engine" and "MB long" in case else message
        assert info.match(expected), (path, str(info.value))
