"""ONNX Runtime calibration over a CalibrationSet: the ``CalibrationDataReader`` and the calibration cache."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..calibration import CalibrationSet


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


def even_batch_size(calibration: CalibrationSet) -> int:
    """The largest batch up to the set's own that divides it: the histogram calibrators (entropy,
    percentile) stack every batch's outputs into one array and fail on a short last batch."""
    return next(size for size in range(min(calibration.batch_size, len(calibration)), 0, -1)
                if len(calibration) % size == 0)


def write_calibration_cache(model_path: str | os.PathLike[str], calibration: CalibrationSet, input_name: str,
                            method, cache_path: str | os.PathLike[str], threads: int | None = None) -> None:
    """Run ONNX Runtime's own calibrator for ``method`` and write the cache ``quantize_static`` reads back.

    Same calibrator and augmented model as ``quantize_static`` builds, but its session keeps ONNX
    Runtime's graph optimizations (the stock one turns them all off) and uses every usable core:
    ResNet-50 @224 calibration goes from about 77 to 49 ms per image on this machine's CPUs.
    """
    import onnxruntime
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from ..cpu import usable_cores

    with tempfile.TemporaryDirectory(prefix="resnet-edge-calib-") as workdir:
        calibrator = create_calibrator(Path(model_path), None, augmented_model_path=str(Path(workdir) / "augmented.onnx"),
                                       calibrate_method=method)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or usable_cores()
        calibrator.infer_session = onnxruntime.InferenceSession(calibrator.augmented_model_path, options,
                                                                providers=["CPUExecutionProvider"])
        calibrator.collect_data(CalibrationReader(calibration, input_name, even_batch_size(calibration)))
        save_tensors_data(calibrator.compute_data(), cache_path)
