"""TFLite representative-dataset generator over a CalibrationSet."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .dataset import CalibrationSet


def representative_dataset(calibration: CalibrationSet) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The callable ``TFLiteConverter.representative_dataset`` expects: one float32 sample per step."""

    def generate() -> Iterator[list[np.ndarray]]:
        for batch in calibration.batches(batch_size=1):
            yield [batch]

    return generate
