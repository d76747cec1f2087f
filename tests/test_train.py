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


# --- keeping the best epoch, early stopping, schedules, fine-tuning phases (tiny models: a second or two each) ---

COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40))


def _colours(per_class: int = 16, size: int = 16, same: bool = False):
    """Four classes of noisy solid colours (learnt in a few epochs), or one grey image in every class (``same``:
    nothing to learn, so every prediction is the same class)."""
    from resnet_edge.data import Dataset

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), per_class)
    if same:
        images = np.full((len(labels), size, size, 3), 128, np.uint8)
    else:
        images = np.stack([np.clip(np.array(COLOURS[label]) + rng.normal(0, 20, (size, size, 3)), 0, 255)
                           for label in labels]).astype(np.uint8)
    return Dataset(images, labels, ("red", "green", "blue", "yellow"), "colours")


def _tiny(size: int = 16, classes: int = 4):
    """Rescaling, a convolution with BatchNormalization, global pooling (where the head starts) and a softmax."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255, name="preprocess")(inputs)
    x = layers.Conv2D(8, 3, name="conv")(x)
    x = layers.BatchNormalization(momentum=0.5, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="predictions")(x), name="tiny")


def _callback(**hooks):
    import keras

    return type("Hooks", (keras.callbacks.Callback,), hooks)()


def _wreck_epoch(epoch: int):
    """A callback that zeroes every weight after each training batch of ``epoch`` (0-based): that epoch validates
    at chance, whatever came before."""
    state = {}

    def begin(self, index, logs=None):
        state["epoch"] = index

    def batch_end(self, batch, logs=None):
        if state["epoch"] == epoch:
            for variable in self.model.weights:
                variable.assign(np.zeros(variable.shape, variable.dtype))

    return _callback(on_epoch_begin=begin, on_train_batch_end=batch_end)


def _accuracy(model, dataset) -> float:
    _, val = dataset.split(0.2, seed=0)
    return float(np.mean(model.predict(val.images.astype(np.float32), verbose=0).argmax(axis=1) == val.labels))


def test_a_run_whose_last_epoch_is_worse_keeps_its_best_epoch(tmp_path) -> None:
    data, model = _colours(), _tiny()
    result = train(model, data, epochs=5, batch_size=8, learning_rate=3e-2, schedule="constant", verbose=0,
                   callbacks=[_wreck_epoch(4)])
    history = result.history["val_accuracy"]
    assert result.final_val_accuracy == history[-1] == 0.25  # the wrecked last epoch: chance
    assert result.best_epoch == 1 + int(np.argmax(history[:4])) < 5 and result.epochs == 5
    assert result.val_accuracy == max(history) >= 0.75 and not result.stopped_early and not result.near_chance
    path = keras_io.save_model(model, tmp_path / "best.keras")
    assert _accuracy(keras_io.load_model(path)[0], data) == pytest.approx(result.val_accuracy)


def test_patience_stops_a_run_that_stops_improving() -> None:
    model = _tiny()  # a frozen backbone at learning rate 0: every epoch validates the same
    with pytest.warns(UserWarning, match="no better than chance"):  # nothing learnt, as intended
        result = train(model, _colours(), epochs=10, batch_size=8, learning_rate=0.0, patience=2, freeze=True,
                       verbose=0)
    assert result.stopped_early and result.epochs == 3 and result.epochs_planned == 10 and result.best_epoch == 1
    assert len(result.history["val_accuracy"]) == 3


@pytest.mark.filterwarnings("ignore:validation accuracy")
def test_a_head_phase_out_of_patience_unfreezes_at_once() -> None:
    result = train(_tiny(), _colours(), epochs=8, batch_size=8, learning_rate=0.0, patience=1, freeze=True,
                   unfreeze_at=5, verbose=0)
    assert result.unfrozen_at == 3 and result.epochs == 3 and result.stopped_early  # 2 head epochs, 1 whole


@pytest.mark.parametrize(("accuracy", "chance", "count", "near"), [
    (0.40, 0.25, 32, True), (0.41, 0.25, 32, False),  # 32 images, 4 classes: two standard deviations, 15.3 points
    (0.15, 0.10, 360, True), (0.16, 0.10, 360, False),  # 360 digits: the 5-point floor
    (0.75, 0.50, 2, True), (1.0, 0.50, 2, False),  # 2 images: never more than halfway from chance to 100 %
])
def test_the_near_chance_rule(accuracy, chance, count, near) -> None:
    from resnet_edge.train import near_chance

    assert near_chance(accuracy, chance, count) is near


def test_chance_is_the_commonest_class() -> None:
    from resnet_edge.train import chance_level

    assert chance_level(np.array([0, 1, 2, 3]), 4) == 0.25
    assert chance_level(np.array([0, 0, 0, 1]), 2) == 0.75


def test_a_model_that_learns_nothing_is_warned_about() -> None:
    with pytest.warns(UserWarning, match=r"validation accuracy 25\.0% \(the best, epoch \d\) is no better than "
                                         r"chance \(25\.0% on 12 images\)"):
        result = train(_tiny(), _colours(same=True), epochs=2, batch_size=8, verbose=0)
    assert result.near_chance and result.chance == 0.25


@pytest.mark.filterwarnings("ignore:validation accuracy")  # what it learns does not matter here
def test_unfreeze_trains_the_head_then_the_whole_network_with_batchnorm_frozen() -> None:
    model = _tiny()
    seen = []

    def end(self, epoch, logs=None):
        seen.append({"conv": self.model.get_layer("conv").get_weights()[0].copy(),
                     "bn": [w.copy() for w in self.model.get_layer("bn").get_weights()],
                     "rate": float(np.asarray(self.model.optimizer.learning_rate))})

    start = {"conv": model.get_layer("conv").get_weights()[0].copy(), "bn": model.get_layer("bn").get_weights()}
    result = train(model, _colours(), epochs=3, batch_size=8, learning_rate=1e-2, schedule="constant", freeze=True,
                   unfreeze_at=1, verbose=0, callbacks=[_callback(on_epoch_end=end)])
    assert result.unfrozen_at == 2 and result.epochs == 3
    assert np.array_equal(seen[0]["conv"], start["conv"]) and not np.array_equal(seen[2]["conv"], start["conv"])
    assert all(np.array_equal(a, b) for epoch in seen for a, b in zip(epoch["bn"], start["bn"], strict=True))
    assert seen[0]["rate"] == pytest.approx(1e-2) and seen[2]["rate"] == pytest.approx(1e-3)  # a tenth from then on
    assert model.get_layer("conv").trainable and not model.get_layer("bn").trainable


@pytest.mark.filterwarnings("ignore:validation accuracy")
def test_unfreeze_needs_a_frozen_backbone_and_an_epoch_before_the_last() -> None:
    from resnet_edge.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="--unfreeze-at needs --freeze-backbone"):
        train(_tiny(), _colours(), epochs=2, unfreeze_at=1, verbose=0)
    with pytest.warns(UserWarning, match="--unfreeze-at 2 is not before the last of 2 epochs"):
        result = train(_tiny(), _colours(), epochs=2, batch_size=8, freeze=True, unfreeze_at=2, verbose=0)
    assert result.unfrozen_at is None


def test_freeze_backbone_needs_a_pooling_layer() -> None:
    import keras

    from resnet_edge.errors import InvalidArgumentError

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="flat")
    with pytest.raises(InvalidArgumentError, match="flat has no global pooling layer"):
        freeze_backbone(model)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    from resnet_edge.train import _schedule

    schedule = _schedule("step", 1.0, 100)
    assert [float(schedule(step)) for step in (0, 50, 51, 75, 76)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


@pytest.mark.filterwarnings("ignore:validation accuracy")
def test_epoch_lines_are_plain_when_not_a_terminal(capsys) -> None:
    train(_tiny(), _colours(), epochs=2, batch_size=8, verbose=1)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "validation loss" in lines[0] and "learning rate" in lines[0]
    assert "\x1b[" not in captured.out + captured.err and "\r" not in captured.out


def _colour_folder(root):
    from PIL import Image

    for label, (name, colour) in enumerate(zip(("red", "green", "blue", "yellow"), COLOURS, strict=True)):
        (root / name).mkdir(parents=True)
        for index in range(10):
            Image.new("RGB", (16, 16), tuple(min(255, c + 3 * index + label) for c in colour)).save(
                root / name / f"{index}.png")
    return root


def test_cli_train_reports_the_best_epoch_in_plain_lines(tmp_path, capsys) -> None:
    from resnet_edge.cli import main

    tiny = _tiny()
    start = keras_io.save_model(tiny, tmp_path / "tiny.keras", keras_io.describe(tiny, COLOUR_NAMES))
    data, out = _colour_folder(tmp_path / "colours"), tmp_path / "trained.keras"
    args = ["train", "--model", str(start), "--data", str(data), "--epochs", "3", "--batch-size", "8", "--lr", "0.03",
            "--schedule", "step", "--patience", "2", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert "\x1b[" not in captured.out + captured.err
    assert len([line for line in captured.err.splitlines() if line.startswith("epoch ")]) == 3
    assert captured.out.startswith("best validation accuracy ") and f"wrote {out}" in captured.out
    with pytest.raises(SystemExit):
        main([*args, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["best_val_accuracy"] == summary["val_accuracy"] and summary["schedule"] == "step"
    assert {"final_val_accuracy", "stopped_early", "near_chance", "unfrozen_at"} <= set(summary)


def test_cli_unfreeze_without_freeze_is_one_line(tmp_path, capsys) -> None:
    from resnet_edge.cli import main

    out = tmp_path / "m.keras"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", "--unfreeze-at", "2", "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --unfreeze-at needs --freeze-backbone (the head trains alone until then)"]


COLOUR_NAMES = ("blue", "green", "red", "yellow")  # an image folder's classes, in sorted order


def test_summary_line_says_when_the_best_was_not_the_last() -> None:
    from resnet_edge.cli.modeling import _train_line

    summary = {"best_val_accuracy": 0.78125, "best_epoch": 1, "epochs_run": 4, "epochs": 4, "stopped_early": False,
               "patience": None, "final_val_accuracy": 0.25, "seconds": 9.0}
    assert _train_line(summary, "m.keras") == ("best validation accuracy 78.12% at epoch 1 of 4; the last epoch had "
                                               "25.00%, the best was written (9 s); wrote m.keras")
    summary.update(best_epoch=9, epochs_run=14, epochs=30, stopped_early=True, patience=5, final_val_accuracy=0.78125)
    assert _train_line(summary, "m.keras") == ("best validation accuracy 78.12% at epoch 9 of 14, stopped early (30 "
                                               "planned; none better in the last 5) (9 s); wrote m.keras")
