"""The float reference: a Keras model behind a compiled ``tf.function``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import import_tensorflow
from ...errors import DeviceError, ModelFileError
from ...metadata import check_input_shape
from ...preprocess import InputSpec
from ...runtime import Backend


class KerasBackend(Backend):
    name = "keras"

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        tf = import_tensorflow()
        return ("cuda", "cpu") if tf.config.list_physical_devices("GPU") else ("cpu",)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        tf = import_tensorflow()
        if threads:
            # TensorFlow keeps its first setting once initialised in this process.
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(threads)
        if device == "cuda" and not tf.config.list_physical_devices("GPU"):
            raise DeviceError("TensorFlow sees no CUDA GPU on this machine")
        from ...models.io import load_model

        self.model, self.metadata = load_model(path)
        declared = self.model.input_shape
        if not isinstance(declared, tuple) or len(declared) != 4 or None in declared[1:]:
            raise ModelFileError(f"{path}: expected one NHWC image input of a fixed size, found {declared}")
        height, width, channels = check_input_shape(declared[1:], str(path))
        self.input_spec = InputSpec(height, width, channels, "float32")
        self.output_names = [t.name for t in self.model.outputs]
        self._device = "/GPU:0" if device == "cuda" else "/CPU:0"
        model = self.model
        signature = [tf.TensorSpec((None, height, width, channels), tf.float32)]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def forward(batch):
            outputs = model(batch, training=False)
            return outputs if isinstance(outputs, (list, tuple)) else [outputs]

        self._forward = forward

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        tf = import_tensorflow()
        with tf.device(self._device):
            return [np.asarray(o) for o in self._forward(batch)]

    def native(self) -> Any:
        """The ``keras.Model``."""
        return self.model
