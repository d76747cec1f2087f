"""Image folders, .npy arrays and digits become RGB uint8 datasets; splits are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnet_edge.data import load_array, load_dataset, load_digits, load_image_folder
from resnet_edge.errors import DataError, InvalidArgumentError


@pytest.fixture()
def image_folder(tmp_path):
    """Two classes in every awkward image mode, plus one corrupt file."""
    rng = np.random.default_rng(0)
    cats, dogs = tmp_path / "cats", tmp_path / "dogs"
    cats.mkdir()
    dogs.mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(cats / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L").save(cats / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(cats / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L").convert("P").save(dogs / "palette.gif")
    Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(dogs / "deep.png")
    (dogs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (dogs / "notes.txt").write_text("ignored")
    return tmp_path


def test_image_folder_converts_modes_and_skips_corrupt_files(image_folder) -> None:
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        dataset = load_image_folder(image_folder, (16, 24))
    assert dataset.images.shape == (5, 16, 24, 3) and dataset.images.dtype == np.uint8
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1]
    assert dataset.skipped == 1


def test_flat_folder_is_unlabelled(tmp_path) -> None:
    for i in range(3):
        Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    dataset = load_dataset(tmp_path, (8, 8))
    assert dataset.labels is None and len(dataset) == 3


def test_digits_are_real_upsampled_rgb() -> None:
    digits = load_digits((32, 32))
    assert digits.images.shape == (1797, 32, 32, 3)
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.images.max() == 255 and digits.images.min() == 0
    np.testing.assert_array_equal(digits.images[..., 0], digits.images[..., 2])


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    digits = load_digits((32, 32))
    train, val = digits.split(0.2, seed=3)
    again_train, _ = digits.split(0.2, seed=3)
    assert len(train) + len(val) == len(digits)
    np.testing.assert_array_equal(train.labels, again_train.labels)
    counts = np.bincount(val.labels)
    assert counts.min() >= 34 and counts.max() <= 38  # about 20% of each ~180-image class
    with pytest.raises(InvalidArgumentError):
        digits.split(1.5)


def test_sample_is_stratified() -> None:
    sample = load_digits((32, 32)).sample(100, seed=0)
    assert len(sample) == 100
    assert np.bincount(sample.labels).min() >= 9


def test_npy_array_source(tmp_path) -> None:
    path = tmp_path / "frames.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8))
    dataset = load_array(path, (32, 32))
    assert dataset.images.shape == (5, 32, 32, 3) and dataset.labels is None


@pytest.mark.parametrize("source", ["missing-folder", "nothing.npy"])
def test_bad_sources_are_one_line_errors(tmp_path, source: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / source, (32, 32))
    assert "\n" not in str(info.value)


def test_folder_without_images(tmp_path) -> None:
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path, (32, 32))


def test_photos_are_real_labelled_crops_made_the_same_way_every_time() -> None:
    from resnet_edge.data import load_dataset, load_photos

    photos = load_dataset("photos", (64, 48))
    assert photos.images.shape[1:] == (64, 48, 3) and photos.images.dtype == np.uint8
    assert len(photos.class_names) >= 10 and len(photos) == len(photos.class_names) * 48
    assert set(np.unique(photos.labels)) == set(range(len(photos.class_names)))
    assert photos.images.std() > 30  # photographs, not flat fields
    np.testing.assert_array_equal(load_photos((64, 48), crops=2).images, load_photos((64, 48), crops=2).images)


def _save(array: np.ndarray, **kwargs):
    return lambda path: np.save(path, array, **kwargs)


def _nan_images() -> np.ndarray:
    images = np.full((3, 8, 8, 3), 100.0, np.float32)
    images[2, 1, 1, 0] = np.nan
    return images


def _claiming(shape: tuple[int, ...]):
    """An .npy whose header claims ``shape`` (uint8) but holds 16 bytes: nothing may be allocated from the claim."""
    def write(path) -> None:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            handle.write(b"\0" * 16)
    return write


@pytest.mark.parametrize(("write", "message"), [
    (_save(np.array([{"a": 1}, None], dtype=object), allow_pickle=True), "holds Python objects"),
    (_save(np.zeros((0, 32, 32, 3), np.uint8)), r"holds no images \(shape \(0, 32, 32, 3\)\)"),
    (_save(np.arange(5)), r"got shape \(5,\)"),
    (_save(np.zeros((2, 8, 8, 7), np.uint8)), "with C 1, 3 or 4"),
    (_save(np.zeros((3, 0, 0, 3), np.uint8)), "its images have no pixels"),
    (_save(_nan_images()), "image 2: image has NaN or infinite pixel values"),
    (_save(np.full((2, 8, 8, 3), np.inf, np.float64)), "image 0: image has NaN or infinite"),
    (_save(np.zeros((2, 8, 8, 3), bool)), "holds bool values, not pixels"),
    (_save(np.zeros((2, 8, 8, 3), np.complex64)), "holds complex64 values"),
    (_save(np.full((2, 8, 8), "x")), "holds <U1 values"),
    (_save(np.zeros((2, 8, 8), dtype=[("a", "u1"), ("b", "f4")])), "values, not pixels"),
    (lambda path: path.write_text("not an array\n"), "not a .npy file"),
    (lambda path: path.write_bytes(b""), "not a .npy file"),
    (_claiming((100_000, 100_000, 100_000, 3)), r"images of 100000x100000 pixels are too large"),
    (_claiming((10**6, 64, 64, 3)), "truncated: its header claims 12288000000 bytes of pixels, the file holds 16"),
])
def test_hostile_npy_files_are_one_line_data_errors(tmp_path, write, message: str) -> None:
    from resnet_edge.calibration import CalibrationSet

    path = tmp_path / "images.npy"
    write(path)
    for load in (lambda: load_dataset(path, (32, 32)), lambda: CalibrationSet.from_source(str(path), (32, 32), 10)):
        with pytest.raises(DataError, match=message) as info:
            load()
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_npy_of_any_pixel_type_is_fitted(tmp_path) -> None:
    for array in [np.full((2, 8, 8), 2**63, np.uint64), np.full((2, 8, 8, 1), -1e30, np.float32),
                  np.full((2, 8, 8, 4), 7, np.int16)]:
        np.save(tmp_path / "a.npy", array)
        dataset = load_array(tmp_path / "a.npy", (16, 16))
        assert dataset.images.shape == (2, 16, 16, 3) and dataset.images.dtype == np.uint8
