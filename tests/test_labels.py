"""Labels anywhere: a model built elsewhere (no labels of its own) gets them at export, checked against its output
count, and every artifact, ``info`` and ``predict`` carry them."""

from __future__ import annotations

import json

import pytest

from resnet_edge.artifact import read_metadata
from resnet_edge.errors import InvalidArgumentError

NAMES = ("cat", "dog", "owl")


def _plain_keras_file(path, outputs: int = 3):
    """A small classifier saved by plain Keras, as a ``keras.applications`` user would: no resnet-edge metadata."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(layers.Conv2D(4, 3, name="conv")(inputs))
    keras.Model(inputs, layers.Dense(outputs, activation="softmax", name="predictions")(x), name="elsewhere").save(path)
    return path


def _cli(capsys, *args: str) -> tuple[int, str, list[str]]:
    from resnet_edge.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err.strip().splitlines()


@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("tflite", ".tflite")])
def test_labels_given_at_export_reach_the_artifact_info_and_predict(fmt, suffix, tmp_path, capsys) -> None:
    from PIL import Image

    model = _plain_keras_file(tmp_path / "elsewhere.keras")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n\n")  # a blank last line is no label
    artifact = tmp_path / f"elsewhere{suffix}"
    code, _, err = _cli(capsys, "export", model, "--format", fmt, "--labels", labels, "--no-verify", "--out", artifact)
    assert code == 0, err
    assert read_metadata(artifact).labels == NAMES

    code, out, _ = _cli(capsys, "info", artifact, "--json")
    assert code == 0 and json.loads(out)["metadata"]["labels"] == list(NAMES)
    assert "3: cat, dog, owl" in _cli(capsys, "info", artifact)[1]

    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "a.png")
    code, out, _ = _cli(capsys, "predict", artifact, tmp_path / "a.png", "--top-k", "3", "--json")
    assert code == 0 and sorted(json.loads(out)["predictions"][0]["labels"]) == sorted(NAMES)


def test_without_labels_a_model_built_elsewhere_prints_indices(tmp_path) -> None:
    from resnet_edge.exporter import export_formats

    model = _plain_keras_file(tmp_path / "elsewhere.keras")
    artifact = export_formats(model, ["onnx"], tmp_path / "m.onnx", verify=False)[0].path
    assert read_metadata(artifact).labels == ("0", "1", "2")


@pytest.mark.parametrize(("lines", "message"), [
    ("cat\ndog\n", "--labels: {labels}: 2 labels for a model with 3 outputs"),
    ("\n\n", "{labels}: no labels in it (one per line)"),
])
def test_labels_that_do_not_fit_are_one_line_and_write_nothing(lines, message, tmp_path, capsys) -> None:
    model = _plain_keras_file(tmp_path / "elsewhere.keras")
    labels = tmp_path / "labels.txt"
    labels.write_text(lines)
    artifact = tmp_path / "m.onnx"
    code, _, err = _cli(capsys, "export", model, "--format", "onnx", "--labels", labels, "--no-verify",
                        "--out", artifact)
    assert code == 2 and err == [f"error: {message.format(labels=labels)}"]
    assert not artifact.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.keras", "labels.txt"]


def test_labels_replace_a_models_own_from_python(tmp_path) -> None:
    from resnet_edge.exporter import export
    from resnet_edge.models.io import load_model

    model, metadata = load_model(_plain_keras_file(tmp_path / "elsewhere.keras"))
    result = export(model, "onnx", tmp_path / "m.onnx", labels=["a", "b", "c"], verify=False)
    assert result.metadata.labels == read_metadata(result.path).labels == ("a", "b", "c")
    assert metadata.labels == ("0", "1", "2")  # the model's own metadata is left as it was


def test_labels_need_a_classifier(tmp_path) -> None:
    import keras

    from resnet_edge.exporter import export

    inputs = keras.Input((32, 32, 3))
    maps = keras.layers.Conv2D(4, 3, name="c3")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="c4")(maps)
    model = keras.Model(inputs, [maps, pooled], name="backbone")
    with pytest.raises(InvalidArgumentError, match="backbone has no single flat output"):
        export(model, "onnx", tmp_path / "m.onnx", labels=["a", "b", "c", "d"], verify=False)
    assert not (tmp_path / "m.onnx").exists()
