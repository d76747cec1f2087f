"""Shared fixtures: one small trained model and its artifacts, built once per test session."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


SIZE = (32, 32)


def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = _has_nvidia_gpu()
    trt = gpu and importlib.util.find_spec("tensorrt") is not None
    jetson = Path("/etc/nv_tegra_release").exists()
    reasons = {"gpu": (gpu, "needs an NVIDIA GPU"), "tensorrt": (trt, "needs TensorRT and an NVIDIA GPU"),
               "jetson": (jetson, "needs an NVIDIA Jetson")}
    for item in items:
        for marker, (available, reason) in reasons.items():
            if item.get_closest_marker(marker) is not None and not available:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def digits():
    from resnet_edge.data import load_digits

    return load_digits(SIZE)


@pytest.fixture(scope="session")
def trained_model_path(tmp_path_factory, digits) -> Path:
    """resnet18 at 32x32 trained briefly on digits: confident enough for meaningful parity checks."""
    import keras

    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import describe, save_model
    from resnet_edge.train import train

    keras.utils.set_random_seed(0)  # the same starting weights every run, so CI sees one model, not a draw
    model = build_resnet("resnet18", (*SIZE, 3), num_classes=10)
    train(model, digits, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("model") / "digits.keras"
    save_model(model, path, describe(model, digits.class_names))
    return path


@pytest.fixture(scope="session")
def trained_model(trained_model_path):
    from resnet_edge.models.io import load_model

    return load_model(trained_model_path)[0]


@pytest.fixture(scope="session")
def calibration_set(digits):
    from resnet_edge.calibration import CalibrationSet

    return CalibrationSet.from_dataset(digits, 200)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, trained_model_path, calibration_set) -> dict[str, Path]:
    """Every CPU format exported once (verified on export) from the trained model."""
    from resnet_edge.exporter import FORMATS, export

    folder = tmp_path_factory.mktemp("artifacts")
    paths = {}
    for name in (n for n, f in FORMATS.items() if f.runs_on_cpu):
        path = folder / f"model_{name.replace('-', '_')}{FORMATS[name].suffix}"
        export(trained_model_path, name, path, calibration=calibration_set, verify=False)
        paths[name] = path
    path = folder / "model_onnx_int8_s8s8.onnx"
    export(trained_model_path, "onnx-int8", path, calibration=calibration_set, verify=False, scheme="s8s8")
    paths["onnx-int8-s8s8"] = path
    return paths


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory, digits):
    """Writes the first ``count`` digits as PNG files in class folders, plus a file ``9/<broken>`` that is no image."""
    from PIL import Image

    def write(name: str, count: int, broken: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        for index in range(count):
            folder = root / str(int(digits.labels[index]))
            folder.mkdir(exist_ok=True)
            Image.fromarray(digits.images[index]).save(folder / f"{index:04d}.png")
        (root / "9").mkdir(exist_ok=True)
        (root / "9" / broken).write_bytes(b"\x89PNG not really")
        return root

    return write


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the scale tests: 2 CPUs, bound to loopback, shared by the whole session."""
    from resnet_edge.scale.cluster import import_ray, session

    with session(num_cpus=2):
        yield import_ray()


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """160 real photo crops (4 photos x 40) as PNG class folders at 32x32: a small folder of the user's own images."""
    import numpy as np
    from PIL import Image

    from resnet_edge.data import load_photos

    photos = load_photos(SIZE)
    root = tmp_path_factory.mktemp("photos")
    for label in range(4):
        folder = root / photos.class_names[label]
        folder.mkdir()
        for index in np.flatnonzero(photos.labels == label)[:40]:
            Image.fromarray(photos.images[index]).save(folder / f"{index:04d}.png")
    return root
