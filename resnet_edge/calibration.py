"""CalibrationSet: representative images in the model's own input form, plus a disjoint hold-out."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .data import Dataset, load_dataset
from .errors import DataError

DEFAULT_COUNT = 300
MIN_RECOMMENDED = 100
# The verification hold-out a folder keeps when it is small: 20 % of its images, up to 100 (a folder of 160 photo
# crops calibrates on 128 and verifies on 32); with fewer than MIN_HOLDOUT to hold out, the calibration images
# themselves verify, and the parity line says so.
HOLDOUT_SHARE = 0.2
HOLDOUT_TARGET = 100
MIN_HOLDOUT = 10


@dataclass(frozen=True)
class CalibrationSet:
    """RGB ``uint8`` images (pixels 0-255, the form every exported model takes) sampled over classes.

    ``holdout`` holds images not used for calibration, which verify the quantized artifact (None when the
    source was too small to keep any); ``labels``/``class_names`` are the calibration images' own, so they
    can verify when there is no hold-out.
    """

    images: np.ndarray
    holdout: Dataset | None
    source: str
    batch_size: int = 8
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_dataset(cls, dataset: Dataset, count: int = DEFAULT_COUNT, seed: int = 0,
                     batch_size: int = 8, holdout: bool = True) -> CalibrationSet:
        """Up to ``count`` images of ``dataset``, stratified over classes; the rest is the verification hold-out.

        With ``holdout`` (the default), a small source keeps ``HOLDOUT_SHARE`` of its images (up to
        ``HOLDOUT_TARGET``) out of calibration even when ``count`` asks for them, so the export is verified on
        images it was not calibrated on; ``holdout=False`` when other images verify (``--verify-data``).
        """
        if count < 1:
            raise DataError("the calibration sample count must be at least 1")
        reserve = min(HOLDOUT_TARGET, math.ceil(HOLDOUT_SHARE * len(dataset))) if holdout else 0
        if reserve < MIN_HOLDOUT:
            reserve = 0
        count = min(count, len(dataset) - reserve)
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
        kept = dataset.subset(remaining).noted("held out from calibration") if len(remaining) else None
        return cls(chosen.images, kept, dataset.source, batch_size, chosen.labels, dataset.class_names)

    @classmethod
    def from_source(cls, source: str | os.PathLike[str], size: tuple[int, int], count: int = DEFAULT_COUNT,
                    seed: int = 0, batch_size: int = 8, policy: str = "squash", holdout: bool = True) -> CalibrationSet:
        """From ``digits``, ``photos``, an image folder or an ``.npy`` file, fitted to ``size`` under the
        model's resize ``policy``."""
        return cls.from_dataset(load_dataset(source, size, policy), count, seed, batch_size, holdout)

    def as_dataset(self) -> Dataset:
        """The calibration images themselves as a Dataset (what verifies when nothing was held out)."""
        return Dataset(self.images, self.labels, self.class_names, self.source,
                       note="the calibration images themselves: too few to hold any out")

    def resized(self, size: tuple[int, int], policy: str = "squash") -> CalibrationSet:
        if self.images.shape[1:3] == tuple(size):
            return self
        images = Dataset(self.images, None, (), self.source).resized(size, policy).images
        holdout = self.holdout.resized(size, policy) if self.holdout is not None else None
        return dataclasses.replace(self, images=images, holdout=holdout)

    def batches(self, batch_size: int | None = None, dtype: str = "float32") -> Iterator[np.ndarray]:
        """The calibration images as NHWC batches of pixels 0-255 in ``dtype``."""
        size = batch_size or self.batch_size
        for start in range(0, len(self.images), size):
            yield self.images[start : start + size].astype(dtype)

