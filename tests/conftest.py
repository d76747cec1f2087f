"""Shared fixtures: one small trained model and its artifacts, built once per test session."""

from __future__ import annotations

import contextlib
import fcntl
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
    _xdist_groups(items)


README_GROUPS = 3  # the README's examples are the longest file: spread over this many xdist groups


def _xdist_groups(items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup`` (make test) a file's tests stay on one worker, so its module fixtures are built
    once; the README's examples, the longest file, go round-robin into a few groups so no worker is left with
    them alone at the end."""
    readme = 0
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = item.path.name
        if group == "test_readme.py":
            group, readme = f"{group}-{readme % README_GROUPS}", readme + 1
        item.add_marker(pytest.mark.xdist_group(group))


@contextlib.contextmanager
def _made_once(tmp_path_factory: pytest.TempPathFactory, name: str):
    """A folder made once per test run and shared by its xdist workers: the first to get the lock makes it (yields
    True), the others wait and take it as made (False). Without xdist, a folder of this session."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / ".made"
        if done.exists():
            yield folder, False
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        yield folder, True
        done.touch()


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

    with _made_once(tmp_path_factory, "model") as (folder, make):
        path = folder / "digits.keras"
        if make:
            keras.utils.set_random_seed(0)  # the same starting weights every run, so CI sees one model, not a draw
            model = build_resnet("resnet18", (*SIZE, 3), num_classes=10)
            train(model, digits, epochs=2, verbose=0)
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

    paths = {}
    with _made_once(tmp_path_factory, "artifacts") as (folder, make):
        for name in (n for n, f in FORMATS.items() if f.runs_on_cpu):
            path = folder / f"model_{name.replace('-', '_')}{FORMATS[name].suffix}"
            if make:
                export(trained_model_path, name, path, calibration=calibration_set, verify=False)
            paths[name] = path
        path = folder / "model_onnx_int8_s8s8.onnx"
        if make:
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
