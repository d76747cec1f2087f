"""Training learns on real data and writes a model that carries its labels."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest

from resnet_edge.errors import DataError
from resnet_edge.models import build_resnet
from resnet_edge.models import io as keras_io
from resnet_edge.train import freeze_backbone, train


def test_training_learns_digits(trained_model, digits) -> None:
    _, val = digits.split(0.2, seed=0)
    predictions = trained_model.predict(val.images.astype(np.float32), verbose=0).argmax(axis=1)
    assert np.mean(predictions == val.labels) >= 0.85  # two epochs; five reach 98 % (see README)


def test_saved_model_carries_labels_and_preprocessing(trained_model_path) -> None:
    metadata = keras_io.read_keras(trained_model_path)
    assert metadata.labels == tuple(str(i) for i in range(10))
    assert metadata.preprocessing == "scale" and metadata.input_shape == (32, 32, 3)


def test_unlabelled_or_mismatched_data_is_refused(digits) -> None:
    model = build_resnet("resnet18", (32, 32, 3), num_classes=3)
    with pytest.raises(DataError, match="10 classes but the model outputs 3"):
        train(model, digits, epochs=1, verbose=0)
    unlabelled = digits.subset(np.arange(50))
    unlabelled = type(unlabelled)(unlabelled.images, None, (), "frames.npy")
    with pytest.raises(DataError, match="labelled images"):
        train(model, unlabelled, epochs=1, verbose=0)


def test_freeze_backbone_trains_only_the_head() -> None:
    model = build_resnet("resnet18", (32, 32, 3), num_classes=4, head="seed")
    freeze_backbone(model)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"head_fc", "predictions"}


@pytest.mark.slow
def test_cli_train_json_summary(tmp_path) -> None:
    out = tmp_path / "m.keras"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "train", "--model", "resnet18", "--data", "digits",
         "--input-size", "32", "--epochs", "1", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out) and 0.0 <= summary["val_accuracy"] <= 1.0
    assert summary["train_images"] + summary["val_images"] == 1797
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_saved_model_has_no_optimizer_state(trained_model_path, tmp_path) -> None:
    import zipfile

    import h5py

    with zipfile.ZipFile(trained_model_path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        assert "optimizer" not in weights
    assert trained_model_path.stat().st_size < 50e6  # resnet18's 11.2 M float32 weights, no Adam moments


def _folder(root, counts: dict[str, int], broken: tuple[str, ...] = ()):
    from PIL import Image

    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (40, 40), (index * 20 % 255, 80, 160)).save(root / name / f"{index}.png")
    for name in broken:
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(b"not an image")
    return root


@pytest.mark.parametrize(("counts", "broken", "message"), [
    ({"cats": 6}, (), "at least two classes, found only 'cats'"),
    ({"cats": 6, "dogs": 6}, ("owls",), "class 'owls' has no readable image"),
    ({"cats": 6, "dogs": 1}, (), "class 'dogs' has one image"),
])
def test_degenerate_training_sets_are_refused(counts, broken, message, tmp_path) -> None:
    from resnet_edge.data import load_image_folder

    with pytest.warns(UserWarning) if broken else contextlib.nullcontext():
        dataset = load_image_folder(_folder(tmp_path / "data", counts, broken), (32, 32))
    with pytest.raises(DataError, match=message):
        dataset.check_trainable()


def test_cli_refuses_one_class_with_one_line_and_no_file(tmp_path) -> None:
    out = tmp_path / "m.keras"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "train", "--data", str(_folder(tmp_path / "data", {"cats": 6})),
         "--epochs", "1", "--out", str(out)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'data'}: a classifier needs at least two classes, found only 'cats'"]
    assert not out.exists()
