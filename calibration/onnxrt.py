"""ONNX Runtime ``CalibrationDataReader`` over a CalibrationSet."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .dataset import CalibrationSet


class CalibrationReader(CalibrationDataReader):
    """Feeds the calibration batches to ``quantize_static`` under the model's input name."""

    def __init__(self, calibration: CalibrationSet, input_name: str, batch_size: int | None = None) -> None:
        self.calibration, self.input_name, self.batch_size = calibration, input_name, batch_size
        self._batches: Iterator[np.ndarray] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = self.calibration.batches(self.batch_size)
