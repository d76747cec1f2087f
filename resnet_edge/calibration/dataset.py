"""CalibrationSet: representative images in the model's own input form, plus a disjoint hold-out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..data import Dataset, load_dataset
from ..errors import DataError

DEFAULT_COUNT = 300
MIN_RECOMMENDED = 100


@dataclass(frozen=True)
class CalibrationSet:
    """RGB ``uint8`` images (pixels 0-255, the form every exported model takes) sampled over classes.

    ``holdout`` holds the images not used for calibration, for verifying the quantized artifact.
    """

    images: np.ndarray
    holdout: Dataset | None
    source: str
    batch_size: int = 8

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_dataset(cls, dataset: Dataset, count: int = DEFAULT_COUNT, seed: int = 0,
                     batch_size: int = 8) -> CalibrationSet:
        if count < 1:
            raise DataError("the calibration sample count must be at least 1")
        indices = dataset.sample_indices(count, seed)
        chosen = dataset.subset(indices)
        if len(chosen) < batch_size:
            raise DataError(
                f"{dataset.source}: {len(chosen)} calibration image(s) is fewer than one batch ({batch_size})"
            )
        if len(chosen) < MIN_RECOMMENDED:
            warnings.warn(
                f"only {len(chosen)} calibration images from {dataset.source}; {MIN_RECOMMENDED}+ are recommended",
                stacklevel=2,
            )
        remaining = np.setdiff1d(np.arange(len(dataset)), indices)
        holdout = dataset.subset(remaining) if len(remaining) else None
        return cls(chosen.images, holdout, dataset.source, batch_size)

    @classmethod
    def from_source(cls, source: str | os.PathLike[str], size: tuple[int, int], count: int = DEFAULT_COUNT,
                    seed: int = 0, batch_size: int = 8, policy: str = "squash") -> CalibrationSet:
        """From ``digits``, ``photos``, an image folder or an ``.npy`` file, fitted to ``size`` under the
        model's resize ``policy``."""
        return cls.from_dataset(load_dataset(source, size, policy), count, seed, batch_size)

    def resized(self, size: tuple[int, int], policy: str = "squash") -> CalibrationSet:
        if self.images.shape[1:3] == tuple(size):
            return self
        images = Dataset(self.images, None, (), self.source).resized(size, policy).images
        holdout = self.holdout.resized(size, policy) if self.holdout is not None else None
        return CalibrationSet(images, holdout, self.source, self.batch_size)

    def batches(self, batch_size: int | None = None, dtype: str = "float32") -> Iterator[np.ndarray]:
        """The calibration images as NHWC batches of pixels 0-255 in ``dtype``."""
        size = batch_size or self.batch_size
        for start in range(0, len(self.images), size):
            yield self.images[start : start + size].astype(dtype)

