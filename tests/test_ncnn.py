"""NCNN: exported from the shared ONNX by pnnx's binary, three files that travel together, checked at load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("ncnn")


def _copy(artifact, folder):
    for suffix in (".param", ".bin", ".json"):
        shutil.copyfile(artifact.with_suffix(suffix), folder / artifact.with_suffix(suffix).name)
    return folder / artifact.name


@pytest.mark.parametrize("fmt", ["ncnn", "ncnn-fp16"])
def test_an_ncnn_export_is_three_files_and_runs_like_keras(fmt, artifacts, trained_model, digits) -> None:
    from resnet_edge.predictor import load

    param = artifacts[fmt]
    assert param.name.endswith(".ncnn.param") and param.with_suffix(".bin").is_file()
    sidecar = json.loads(param.with_suffix(".json").read_text())
    assert sidecar["format"] == fmt and sidecar["extra"]["input_blob"] == "in0"
    assert [o["blob"] for o in sidecar["extra"]["outputs"]] == ["out0"]
    assert sidecar["extra"]["winograd"] is False  # 32 px: Winograd off under "auto"
    images = digits.images[:16]
    with load(param) as predictor:
        assert predictor.backend.name == "ncnn" and predictor.input_spec.size == (32, 32)
        outputs = predictor(images)
    reference = trained_model.predict(images.astype(np.float32), verbose=0)
    assert outputs.shape == reference.shape
    assert np.abs(outputs - reference).max() < (1e-4 if fmt == "ncnn" else 1e-2)
    assert (outputs.argmax(1) == reference.argmax(1)).all()


def test_fp16_weights_halve_the_file(artifacts) -> None:
    full, half = (artifacts[f].with_suffix(".bin").stat().st_size for f in ("ncnn", "ncnn-fp16"))
    assert 0.45 < half / full < 0.55


def test_weights_of_another_model_are_refused(artifacts, tmp_path) -> None:
    """NCNN itself loads a .bin of the right size with other numbers in it, and computes garbage."""
    from resnet_edge.errors import ModelFileError
    from resnet_edge.predictor import load

    param = _copy(artifacts["ncnn"], tmp_path)
    weights = param.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[1000:1004] = b"\x00\x00\x80\x7f"
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="not the weights this model was exported with"):
        load(param)


@pytest.mark.parametrize("missing", [".json", ".bin"])
def test_a_missing_companion_is_one_line(artifacts, tmp_path, missing) -> None:
    from resnet_edge.errors import ModelFileError
    from resnet_edge.predictor import load

    param = _copy(artifacts["ncnn"], tmp_path)
    param.with_suffix(missing).unlink()
    with pytest.raises(ModelFileError, match="missing") as caught:
        load(param)
    assert "\n" not in str(caught.value)


def test_a_corrupt_param_is_one_line(artifacts, tmp_path) -> None:
    from resnet_edge.errors import ModelFileError
    from resnet_edge.predictor import load

    param = _copy(artifacts["ncnn"], tmp_path)
    param.write_text("7767517\nnot a layer line\n")
    with pytest.raises(ModelFileError, match="NCNN cannot load it"):
        load(param)


def test_without_pnnx_the_export_names_the_install_line(monkeypatch) -> None:
    from resnet_edge.backends.ncnn import convert
    from resnet_edge.errors import MissingDependencyError

    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps pnnx"):
        convert.pnnx_binary()


def test_pads_get_an_explicit_mode() -> None:
    """tf2onnx writes Pad without a mode; pnnx then leaves it unconverted and still exits 0."""
    onnx = pytest.importorskip("onnx")
    from resnet_edge.backends.ncnn.convert import with_pad_modes

    node = onnx.helper.make_node("Pad", ["x", "pads"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [], [])
    proto = onnx.helper.make_model(graph)
    with_pad_modes(proto)
    assert [(a.name, a.s) for a in proto.graph.node[0].attribute] == [("mode", b"constant")]
