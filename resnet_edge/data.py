"""Image datasets held as RGB ``uint8`` NHWC arrays: image folders, ``.npy`` arrays, digits and photos."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cpu import usable_cores
from .errors import DataError, InvalidArgumentError, first_line
from .preprocess import MAX_IMAGE_PIXELS, fit_image, is_image_file, load_image, resize, to_rgb_uint8

# Natural photos that ship inside the scikit-image wheel (its other sample files are charts and synthetic).
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
PHOTO_CROPS = 48


@dataclass(frozen=True)
class Dataset:
    """Images (RGB ``uint8``, NHWC) with optional integer labels and their class names."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    source: str
    skipped: int = 0
    note: str = ""  # how these images were drawn from ``source`` ("held out from calibration")
    stand_in: bool = False  # not the user's images: built-in ones standing in because none were given

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        """What these images are, for a parity line: ``'40 images of photos/ (held out from calibration)'``."""
        return f"{len(self)} images of {self.source}" + (f" ({self.note})" if self.note else "")

    def noted(self, note: str, stand_in: bool | None = None) -> Dataset:
        """The same images with a new provenance note."""
        return dataclasses.replace(self, note=note, stand_in=self.stand_in if stand_in is None else stand_in)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, indices: np.ndarray) -> Dataset:
        labels = None if self.labels is None else self.labels[indices]
        return dataclasses.replace(self, images=self.images[indices], labels=labels)

    def _groups(self) -> list[np.ndarray]:
        if self.labels is None:
            return [np.arange(len(self))]
        return [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]

    def check_trainable(self) -> None:
        """A classifier needs two or more classes, each with an image to train on and one to validate on."""
        if self.labels is None:
            raise DataError(f"{self.source}: training needs labelled images (one subfolder per class)")
        if len(self.class_names) < 2:
            found = f"only {self.class_names[0]!r}" if self.class_names else "none"
            raise DataError(f"{self.source}: a classifier needs at least two classes, found {found}")
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        for name, count in zip(self.class_names, counts, strict=True):
            if count < 2:
                what = "no readable image" if count == 0 else "one image (one to train and one to validate are needed)"
                raise DataError(f"{self.source}: class {name!r} has {what}")

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Deterministic split, stratified over classes: (train, validation)."""
        if not 0.0 < val_fraction < 1.0:
            raise InvalidArgumentError(f"validation fraction must be between 0 and 1, got {val_fraction}")
        rng = np.random.default_rng(seed)
        train, val = [], []
        for group in self._groups():
            group = rng.permutation(group)
            n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
            val.append(group[:n_val])
            train.append(group[n_val:])
        train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise DataError(f"{self.source}: {len(self)} images are too few to split for validation")
        return self.subset(train_idx), self.subset(val_idx)

    def sample_indices(self, count: int, seed: int = 0) -> np.ndarray:
        """Indices of up to ``count`` images, stratified over classes, deterministic for a seed."""
        if count >= len(self):
            return np.arange(len(self))
        rng = np.random.default_rng(seed)
        groups = [rng.permutation(g) for g in self._groups()]
        # Interleave classes by relative position so every class is represented in proportion.
        order = np.argsort(np.concatenate([np.arange(len(g)) / len(g) for g in groups]), kind="stable")
        return np.sort(np.concatenate(groups)[order][:count])

    def sample(self, count: int, seed: int = 0) -> Dataset:
        return self if count >= len(self) else self.subset(self.sample_indices(count, seed))

    def resized(self, size: tuple[int, int], policy: str = "squash") -> Dataset:
        """The images fitted to ``size`` under a resize policy (the model's, from its metadata)."""
        if self.image_size == tuple(size):
            return self
        images = np.stack([resize(image, size, policy) for image in self.images])
        return dataclasses.replace(self, images=images)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size]


def load_digits(size: tuple[int, int] = (32, 32), policy: str = "squash") -> Dataset:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to ``size`` with 3 channels."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise DataError("the digits dataset needs scikit-learn: pip install 'resnet-edge[export]'") from exc
    bunch = sklearn_digits()
    pixels = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack([fit_image(p, size, policy) for p in pixels])
    names = tuple(str(int(n)) for n in bunch.target_names)
    return Dataset(images, bunch.target.astype(np.int64), names, "digits")


def load_photos(size: tuple[int, int] = (224, 224), policy: str = "squash", crops: int = PHOTO_CROPS,
                seed: int = 0) -> Dataset:
    """Real photos at camera scale with no download: random square-ish crops of the sample photos that ship
    with scikit-learn and scikit-image, ``crops`` per photo, resized to ``size``; labelled by photo."""
    try:
        import skimage
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise DataError("the photos dataset needs scikit-learn and scikit-image: "
                        "pip install 'resnet-edge[export,photos]'") from exc
    folder = Path(skimage.__file__).parent / "data"
    photos = dict(zip(("china.jpg", "flower.jpg"), load_sample_images().images, strict=True))
    photos.update((name, load_image(folder / name)) for name in SKIMAGE_PHOTOS)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, photo in enumerate(photos.values()):
        photo = to_rgb_uint8(photo)
        height, width = photo.shape[:2]
        for _ in range(crops):
            side = int(min(height, width) * rng.uniform(0.35, 1.0))
            aspect = rng.uniform(0.8, 1.25)
            crop_h, crop_w = min(height, int(side * aspect)), min(width, int(side / aspect))
            top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
            images.append(resize(photo[top : top + crop_h, left : left + crop_w], size, policy))
            labels.append(label)
    names = tuple(Path(name).stem for name in photos)
    return Dataset(np.stack(images), np.asarray(labels, dtype=np.int64), names, "photos")


BUILTIN_DATASETS: dict[str, Callable[[tuple[int, int], str], Dataset]] = {"digits": load_digits, "photos": load_photos}


def scan_folder(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image files (sorted, class by class), their labels and the class names; no labels for a flat folder.

    A folder with no image file is a one-line error.
    """
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        files += found
        labels += [index] * len(found)
    if not class_dirs:
        files = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted({'.jpg', '.png', '.bmp'}))} …)")
    return files, labels, tuple(d.name for d in class_dirs)


def load_image_folder(
    root: str | os.PathLike[str],
    size: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
    policy: str = "squash",
    workers: int | None = None,
) -> Dataset:
    """One subfolder per class (like Keras' ``flow_from_directory``), or a flat folder of unlabelled images.

    Images are decoded by a pool of ``workers`` threads (default: the usable cores), each fitted to
    ``size`` under ``policy`` as it is decoded; unreadable files are skipped and counted in a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files, labels, class_names = scan_folder(root)
    images, kept_labels, failures = [], [], []

    def decode(path: Path) -> np.ndarray | DataError:
        try:
            return load_image(path, size, policy)
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(workers or usable_cores(), thread_name_prefix="decode") as pool:
        for position, image in enumerate(pool.map(decode, files)):
            if isinstance(image, DataError):
                failures.append(str(image))
            else:
                images.append(image)
                if labels:
                    kept_labels.append(labels[position])
            if progress is not None:
                progress(position + 1, len(files))
    if failures:
        warnings.warn(f"skipped {len(failures)} unreadable image(s) in {root}; first: {failures[0]}", stacklevel=2)
    if not images:
        raise DataError(f"{root}: none of the {len(files)} image files could be read")
    label_array = np.asarray(kept_labels, dtype=np.int64) if labels else None
    return Dataset(np.stack(images), label_array, class_names, str(root), skipped=len(failures))


NPY_MAGIC = b"\x93NUMPY"


def _npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of an ``.npy`` file from its header alone: nothing is allocated from what the
    file claims, and a file that is not an ``.npy`` (text, pickle) is refused before NumPy tries to unpickle it."""
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise DataError(f"{path}: not a .npy file (no NumPy header; save the images with numpy.save)")
            handle.seek(0)
            version = fmt.read_magic(handle)
            if version not in readers:
                raise DataError(f"{path}: .npy format version {version[0]}.{version[1]} does not hold plain images")
            shape, _, dtype = readers[version](handle)
            return tuple(shape), dtype, handle.tell()
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read as a .npy array ({first_line(exc, 200)})") from exc


def _check_npy(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    """Refuse, in one line, an ``.npy`` that cannot be a batch of images, before any of its data is read."""
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (dtype {dtype}, saved with allow_pickle), not pixels; "
                        "save the images as a uint8 (or float) array")
    if dtype.fields is not None or dtype.kind not in "uif":
        raise DataError(f"{path}: holds {dtype} values, not pixels (integers 0-255, or floats in that range)")
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
        raise DataError(f"{path}: expected an array of images (N,H,W[,C] with C 1, 3 or 4), got shape {shape}")
    if shape[0] == 0:
        raise DataError(f"{path}: holds no images (shape {shape})")
    if min(shape[1:3]) == 0:
        raise DataError(f"{path}: its images have no pixels (shape {shape})")
    if shape[1] * shape[2] > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: images of {shape[2]}x{shape[1]} pixels are too large (limit {MAX_IMAGE_PIXELS})")
    claimed, present = math.prod(shape) * dtype.itemsize, os.path.getsize(path) - offset
    if present < claimed:
        raise DataError(f"{path}: truncated: its header claims {claimed} bytes of pixels, the file holds {present}")


def load_array(path: str | os.PathLike[str], size: tuple[int, int], policy: str = "squash") -> Dataset:
    """An ``.npy`` array of images (NHWC or NHW, pixel values 0-255), unlabelled.

    The header is checked first (dtype, shape, length: object arrays, strings, 0 images, 0x0 images and
    truncated files are refused in one line), then the file is memory-mapped and fitted image by image,
    so a large array is never held twice; an image with NaN or infinite values is refused by its index.
    """
    shape, dtype, offset = _npy_header(path)
    _check_npy(path, shape, dtype, offset)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as a .npy array ({first_line(exc, 200)})") from exc
    fitted = []
    for index, image in enumerate(array):
        try:
            fitted.append(fit_image(image, size, policy))
        except DataError as exc:
            raise DataError(f"{path}: image {index}: {exc}") from exc
    del array  # closes the memory map
    return Dataset(np.stack(fitted), None, (), str(path))


def load_dataset(source: str | os.PathLike[str], size: tuple[int, int], policy: str = "squash") -> Dataset:
    """``digits``, ``photos``, an image folder, or an ``.npy`` file, as RGB ``uint8`` images fitted to
    ``size`` under the model's resize ``policy``."""
    text = str(source)
    if text in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[text](size, policy)
    path = Path(text)
    if path.is_dir():
        return load_image_folder(path, size, policy=policy)
    if path.suffix == ".npy" and path.is_file():
        return load_array(path, size, policy)
    if not path.exists():
        raise DataError(f"{text}: no such folder or file (use an image folder, an .npy file, 'digits' or 'photos')")
    raise DataError(f"{text}: not an image folder or an .npy file (or 'digits', 'photos')")
