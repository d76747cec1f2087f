"""LiteRT (TFLite) interpreter with XNNPACK; integer tensors are quantized/dequantized by their own scales."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...cpu import usable_cores
from ...errors import ModelFileError, first_line
from ...metadata import Quantization, check_input_shape
from ...preprocess import InputSpec, dequantize
from ...runtime import Backend
from .container import read_tflite_bytes


def tensor_quantization(detail: dict) -> Quantization | None:
    scale, zero_point = detail["quantization"]
    return Quantization(float(scale), int(zero_point)) if scale else None


def signature_outputs(interpreter: Any) -> list[dict]:
    """The output tensors in the order the Keras model returned them: the serving signature names them
    ``output_0``, ``output_1``... in that order, while the flatbuffer's own output list may be reordered (a c3-c5
    backbone came out c4, c3, c5). Without a signature, the flatbuffer's order."""
    details = interpreter.get_output_details()
    try:
        signatures = interpreter.get_signature_list()
        key = next(iter(signatures))
        named = interpreter.get_signature_runner(key).get_output_details()
    except (StopIteration, ValueError, RuntimeError, AttributeError):
        return details
    numbered = {key: re.fullmatch(r"output_(\d+)", key) for key in named}
    if not all(numbered.values()):
        return details
    keys = sorted(named, key=lambda key: int(numbered[key].group(1)))
    by_index = {d["index"]: d for d in details}
    ordered = [by_index.get(named[k]["index"]) for k in keys]
    return ordered if len(ordered) == len(details) and all(ordered) else details


class TFLiteBackend(Backend):
    name = "tflite"
    thread_safe = False
    keep_intermediates: ClassVar[bool] = False

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        interpreter_module = lazy_import("ai_edge_litert.interpreter", extra="tflite")
        content = path.read_bytes()
        self.metadata = read_tflite_bytes(content, str(path))
        try:
            with quiet():
                self.interpreter = interpreter_module.Interpreter(
                    model_content=content, num_threads=threads or usable_cores(),
                    experimental_preserve_all_tensors=self.keep_intermediates)
            inputs = self.interpreter.get_input_details()
            if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][-1] != 3:
                raise ModelFileError(f"{path}: expected one NHWC image input, found {[list(i['shape']) for i in inputs]}")
            # before allocate_tensors, which would allocate whatever the file declares
            check_input_shape([int(v) for v in inputs[0]["shape"]], str(path), "input")
            with quiet():
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: LiteRT cannot load it ({first_line(exc, 200)})") from exc
        detail = self.interpreter.get_input_details()[0]
        self.input_index = detail["index"]
        _, height, width, channels = (int(v) for v in detail["shape"])
        self.input_spec = InputSpec(height, width, channels, np.dtype(detail["dtype"]).name, tensor_quantization(detail))
        details = signature_outputs(self.interpreter)
        self.outputs = [(o["index"], tensor_quantization(o)) for o in details]
        built = [o.name for o in self.metadata.outputs] if self.metadata else []
        self.output_names = built if len(built) == len(details) else [o["name"] for o in details]
        self.batch_size = int(detail["shape"][0])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(batch) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_index, list(batch.shape), strict=False)
            self.interpreter.allocate_tensors()
            self.batch_size = len(batch)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return [dequantize(self.interpreter.get_tensor(index), q) for index, q in self.outputs]

    def native(self) -> Any:
        """The LiteRT ``Interpreter``."""
        return self.interpreter
