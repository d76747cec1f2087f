"""Which images verify an export, named in every parity line and JSON: never unrelated data, silently."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from resnet_edge.calibration import CalibrationSet
from resnet_edge.data import Dataset


def _dataset(count: int, classes: int = 4) -> Dataset:
    images = np.zeros((count, 8, 8, 3), np.uint8)
    return Dataset(images, np.arange(count) % classes, tuple(f"c{i}" for i in range(classes)), "folder/")


@pytest.mark.parametrize(
    ("images", "count", "calibrated", "held_out"),
    [(160, 300, 128, 32), (350, 300, 280, 70), (1797, 300, 300, 1497), (45, 300, 45, None), (50, 300, 40, 10)],
)
def test_a_small_folder_keeps_a_share_to_verify_on(images, count, calibrated, held_out) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibration = CalibrationSet.from_dataset(_dataset(images), count)
    assert len(calibration) == calibrated
    assert (None if calibration.holdout is None else len(calibration.holdout)) == held_out
    if calibration.holdout is not None:
        assert calibration.holdout.describe() == f"{held_out} images of folder/ (held out from calibration)"


def test_no_hold_out_when_other_images_verify() -> None:
    calibration = CalibrationSet.from_dataset(_dataset(160), 300, holdout=False)
    assert len(calibration) == 160 and calibration.holdout is None


def test_the_rule_in_order(trained_model) -> None:
    from resnet_edge.parity import verification_set

    given = _dataset(20).noted("given")
    assert verification_set(None, given, (32, 32), "squash") is given
    calibration = CalibrationSet.from_dataset(_dataset(160), 300)
    assert verification_set(calibration, None, (32, 32), "squash") is calibration.holdout
    with pytest.warns(UserWarning, match="verified on the calibration images themselves"):
        tiny = CalibrationSet.from_dataset(_dataset(40), 300)
        chosen = verification_set(tiny, None, (32, 32), "squash")
    assert len(chosen) == 40 and "the calibration images themselves" in chosen.describe()
    assert chosen.labels is not None
    fallback = verification_set(None, None, (32, 32), "squash")
    assert fallback.stand_in and fallback.source == "digits" and "no images given" in fallback.describe()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_photo_folder_verifies_the_int8_export_never_digits(trained_model_path, photo_folder, tmp_path) -> None:
    """160 photo crops with the default --calib-count 300: the hold-out verifies, and the line says so."""
    result = cli("export", str(trained_model_path), "--format", "onnx-int8", "--calib-data", str(photo_folder),
                 "--out", str(tmp_path / "m.onnx"), "--json")
    summary = json.loads(result.stdout)
    parity = summary["parity"]
    assert parity["data"] == f"32 images of {photo_folder} (held out from calibration)"
    assert parity["calibration_images"] == 128 and parity["samples"] == 32 and not parity["stand_in"]
    assert "digits" not in json.dumps(parity)
    # the photos are not the digit classes: no accuracy, but the agreement on the user's own images is reported
    assert parity["candidate_accuracy"] is None and parity["top1_agreement"] is not None
    shown = cli("export", str(trained_model_path), "--format", "onnx", "--calib-data", str(photo_folder),
                "--out", str(tmp_path / "f.onnx"))
    assert shown.returncode == 0, shown.stderr
    assert f"on 32 images of {photo_folder} (held out from calibration)" in shown.stderr
    assert "digits" not in shown.stderr


@pytest.mark.slow
def test_without_images_digits_stand_in_and_the_line_says_so(trained_model_path, tmp_path) -> None:
    from resnet_edge.exporter import export
    from resnet_edge.models.io import load_model

    model = load_model(trained_model_path)[0]
    report = export(model, "tflite", tmp_path / "m.tflite").parity
    assert report.stand_in and report.data.startswith("500 images of digits (built-in: no images given")
    assert report.top1_agreement is not None  # this model's classes are the digits: agreement means something


@pytest.mark.slow
def test_verify_data_verifies_and_calibration_keeps_every_image(trained_model_path, photo_folder, digit_folder,
                                                                tmp_path) -> None:
    verify = digit_folder("verify_digits", 60, "broken.png")
    result = cli("export", str(trained_model_path), "--format", "tflite-int8", "--calib-data", str(photo_folder),
                 "--verify-data", str(verify), "--out", str(tmp_path / "m.tflite"), "--json")
    assert result.returncode == 0, result.stderr
    parity = json.loads(result.stdout)["parity"]
    assert parity["calibration_images"] == 160 and parity["data"] == f"60 images of {verify}"
    assert parity["candidate_accuracy"] is not None  # digit folders: the model's own classes
