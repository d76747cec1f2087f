"""Absurd and hostile inputs give one line: declared input sizes refused at load by every backend, and what a
tired user types at the CLI (empty, bomb and fake images, hostile metadata and arrays, missing cameras) exits 2.

The models are made by hand (an ONNX graph of two nodes, a TFLite flatbuffer without operators), so nothing
here needs TensorFlow or a trained model.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_edge.errors import ModelFileError
from resnet_edge.metadata import ModelMetadata

onnx = pytest.importorskip("onnx")


def tiny_onnx(path: Path, height: int, width: int, batch: int | str = "N", metadata: str | None = None) -> Path:
    """An NHWC classifier of 3 'classes': the mean colour through a softmax."""
    helper, tensor = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0), helper.make_node("Softmax", ["mean"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", tensor.FLOAT, [batch, height, width, 3])],
        [helper.make_tensor_value_info("y", tensor.FLOAT, [batch, 3])],
        [helper.make_tensor("axes", tensor.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if metadata is not None:
        model.metadata_props.add(key="resnet_edge", value=metadata)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_tflite(path: Path, shape: list[int]) -> Path:
    """A TFLite model whose one float tensor is both input and output (no operator: loads in milliseconds)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools import flatbuffer_utils

    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = shape, schema.TensorType.FLOAT32, 0, b"x"
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs, subgraph.operators = [tensor], [0], [0], []
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [subgraph], [schema.BufferT()], []
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + chunk(b"IEND", b""))


# Declared input sizes: refused when the artifact is loaded, before a frame is resized to them -----------------------

SIDES = ((100_000, 100_000, "N"), "absurd .more than 16384 pixels a side")
ZERO = ((0, 0, "N"), r"shape \[0, 0, 3\] has a side of zero or less")
BATCH = ((256, 256, 100_000), "absurd .more than 268435456 values")  # OpenVINO makes the batch dynamic: no harm there


def _openvino_ir(onnx_path: Path) -> Path:
    ov = pytest.importorskip("openvino")
    xml = onnx_path.with_suffix(".xml")
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


@pytest.mark.parametrize(("runtime", "dims", "message"), [
    ("onnxruntime", *SIDES), ("onnxruntime", *ZERO), ("onnxruntime", *BATCH),
    ("openvino", *SIDES), ("openvino", *ZERO),
    ("openvino-ir", *SIDES),  # OpenVINO itself refuses to save a 0x0 input
])
def test_onnx_and_openvino_refuse_absurd_declared_inputs(tmp_path, runtime: str, dims, message: str) -> None:
    from resnet_edge.predictor import load

    pytest.importorskip("onnxruntime" if runtime == "onnxruntime" else "openvino")
    path = tiny_onnx(tmp_path / "absurd.onnx", *dims)
    if runtime == "openvino-ir":
        path = _openvino_ir(path)
    with pytest.raises(ModelFileError, match=message) as info:
        load(path, device="cpu", backend="openvino" if runtime.startswith("openvino") else None)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(("shape", "message"), [
    ([1, 100_000, 100_000, 3], "absurd .more than 16384 pixels a side"),
    ([1, 0, 0, 3], "has a side of zero or less"),
    ([100_000, 256, 256, 3], "absurd .more than 268435456 values"),
])
def test_tflite_refuses_absurd_declared_inputs_before_allocating_them(tmp_path, shape, message: str) -> None:
    from resnet_edge.predictor import load

    path = tiny_tflite(tmp_path / "absurd.tflite", shape)
    with pytest.raises(ModelFileError, match=message) as info:
        load(path, device="cpu")
    assert "\n" not in str(info.value)


def test_sane_tiny_models_still_load_and_run(tmp_path) -> None:
    from resnet_edge.predictor import load

    pytest.importorskip("onnxruntime")
    frame = np.full((1, 1, 3), 200, np.uint8)
    with load(tiny_onnx(tmp_path / "ok.onnx", 8, 8), device="cpu") as predictor:
        assert predictor.input_spec.size == (8, 8)
        assert predictor.predict(frame, top_k=1).predictions[0].indices == [0]
    with load(tiny_tflite(tmp_path / "ok.tflite", [1, 8, 8, 3]), device="cpu") as predictor:
        assert predictor(frame[None].repeat(8, 1).repeat(8, 2)).shape == (1, 8, 8, 3)


@pytest.mark.parametrize("fixed", [1, 3])
def test_a_fixed_batch_onnx_runs_any_number_of_images(tmp_path, fixed: int) -> None:
    from resnet_edge.predictor import load

    pytest.importorskip("onnxruntime")
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    with load(tiny_onnx(tmp_path / "fixed.onnx", 8, 8, fixed), device="cpu") as fixed_batch, \
            load(tiny_onnx(tmp_path / "any.onnx", 8, 8), device="cpu") as any_batch:
        np.testing.assert_allclose(fixed_batch(frames), any_batch(frames), rtol=1e-6)
        assert fixed_batch(frames[:1]).shape == (1, 3)


# The CLI as a tired user meets it: one line, exit 2 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    tiny_onnx(folder / "ok.onnx", 8, 8)
    tiny_onnx(folder / "huge.onnx", 100_000, 100_000)
    tiny_onnx(folder / "deep.onnx", 8, 8, metadata="[" * 100_000 + "]" * 100_000)
    good = ModelMetadata(model="tiny", input_shape=(8, 8, 3), labels=("r", "g", "b")).to_json()
    tiny_onnx(folder / "labels.onnx", 8, 8, metadata=good.replace('["r","g","b"]', '[1,{"a":2},null]'))
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "bomb.png").write_bytes(png_claiming(40_000, 40_000))
    (folder / "text.jpg").write_text("a shopping list, not a photo\n")
    (folder / "x.jpg").mkdir()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one.png")
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(folder / "empty.npy", np.zeros((0, 32, 32, 3), np.uint8))
    np.save(folder / "flat.npy", np.arange(5))
    nan = np.full((2, 8, 8, 3), 100.0, np.float32)
    nan[1, 0, 0, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    (folder / "text.npy").write_text("not an array\n")
    return folder


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    from resnet_edge.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "{ok.onnx}", "{zero.jpg}", "--strict"], "zero.jpg: empty file, not an image"),
    (["predict", "{ok.onnx}", "{bomb.png}", "--strict"], "bomb.png: image too large: 1600000000 pixels (limit"),
    (["predict", "{ok.onnx}", "{text.jpg}", "--strict"], "text.jpg: cannot decode image"),
    (["predict", "{ok.onnx}", "{x.jpg}", "--strict"], "x.jpg"),
    (["predict", "{huge.onnx}", "{one.png}"], "absurd"),
    (["predict", "{ok.onnx}", "--source", "99"], "no camera 99 on this machine"),
    (["predict", "{ok.onnx}", "--source", "-1"], "no camera -1: camera indices are 0, 1, 2"),
    (["info", "{deep.onnx}"], "metadata nests more than 32 levels deep"),
    (["info", "{labels.onnx}"], "labels must be a list of strings"),
    (["train", "--data", "{objects.npy}"], "holds Python objects"),
    (["train", "--data", "{empty.npy}"], "holds no images"),
    (["train", "--data", "{flat.npy}"], "got shape (5,)"),
    (["train", "--data", "{nan.npy}"], "image 1: image has NaN or infinite pixel values"),
    (["train", "--data", "{text.npy}"], "not a .npy file"),
])
def test_hostile_input_at_the_cli_is_one_line_exit_2(hostile, capsys, args: list[str], message: str) -> None:
    if "--source" in args:
        pytest.importorskip("cv2")
    code, lines = run_cli(capsys, *(str(hostile / a[1:-1]) if a.startswith("{") else a for a in args))
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], lines
    assert not any("Traceback" in line for line in lines)


def test_a_one_pixel_image_is_labelled(hostile, capsys) -> None:
    code, _ = run_cli(capsys, "predict", str(hostile / "ok.onnx"), str(hostile / "one.png"), "--json")
    assert code == 0
