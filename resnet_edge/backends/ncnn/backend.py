"""NCNN on the CPU: one image per extractor, the precision switches the artifact records.

The Python binding is strict in ways that crash rather than raise, so the input is made what NCNN needs before
every call: float32, C-contiguous, one (H, W, C) image (pnnx keeps the NHWC input without the batch), wrapped in a
cloned ``ncnn.Mat`` (an unclowned one has crashed ``extract``). Light mode stays off so outputs can be read in any
order. ``extract`` holds the GIL, so calls are serialised; NCNN's own threads (``num_threads``) give the speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import lazy_import
from ..._quiet import quiet
from ...cpu import usable_cores
from ...errors import ModelFileError
from ...metadata import check_input_shape
from ...preprocess import InputSpec
from ...runtime import Backend
from .container import read_ncnn, weights_digest, weights_path


def _ncnn():
    return lazy_import("ncnn", extra="ncnn")


class NcnnBackend(Backend):
    name = "ncnn"
    thread_safe = False

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        _ncnn()  # not installed: a MissingDependencyError that names the extra
        return ("cpu",)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        ncnn = _ncnn()
        path = Path(path)
        self.metadata = read_ncnn(path)
        if self.metadata is None:
            raise ModelFileError(f"{path}: its metadata {path.with_suffix('.json').name} is missing (an NCNN model is "
                                 "the .ncnn.param, .ncnn.bin and .ncnn.json: copy the three together)")
        weights = weights_path(path)
        if not weights.is_file():
            raise ModelFileError(f"{path}: its weights file {weights.name} is missing")
        extra = self.metadata.extra
        recorded = extra.get("weights_sha256")
        if recorded and weights_digest(weights) != recorded:
            raise ModelFileError(f"{path}: {weights.name} is not the weights this model was exported with (sha256 "
                                 "differs); copy the .param, .bin and .json together")
        height, width, channels = check_input_shape(self.metadata.input_shape, str(path), "metadata input")
        self.input_spec = InputSpec(height, width, channels, "float32")
        self.input_blob = str(extra.get("input_blob", "in0"))
        outputs = extra.get("outputs") or [{"blob": "out0", "name": "out0"}]
        self.output_blobs = [str(o["blob"]) for o in outputs]
        self.output_names = [str(o.get("name", o["blob"])) for o in outputs]
        self.net = net = ncnn.Net()
        options = net.opt
        options.num_threads = int(threads or usable_cores())
        options.lightmode = False
        options.use_vulkan_compute = False
        storage = extra.get("storage", "fp32")
        half = storage == "fp16"
        options.use_fp16_packed = options.use_fp16_storage = options.use_fp16_arithmetic = half
        options.use_bf16_storage = options.use_bf16_packed = storage == "bf16"
        options.use_winograd_convolution = bool(extra.get("winograd", False))
        self.inference_precision = storage
        with quiet():
            loaded = net.load_param(str(path)), net.load_model(str(weights))
        if loaded != (0, 0):
            raise ModelFileError(f"{path}: NCNN cannot load it (load_param {loaded[0]}, load_model {loaded[1]}: a "
                                 "corrupt file, or a layer this ncnn does not have)")
        if self.input_blob not in net.input_names() or not set(self.output_blobs) <= set(net.output_names()):
            raise ModelFileError(f"{path}: its blobs ({net.input_names()} in, {net.output_names()} out) are not the "
                                 f"ones its metadata names ({self.input_blob} in, {self.output_blobs} out)")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        ncnn = _ncnn()
        per_output: list[list[np.ndarray]] = [[] for _ in self.output_blobs]
        for image in batch:
            image = np.ascontiguousarray(image, dtype=np.float32)  # float64 or uint8 Mats crash NCNN
            with self.net.create_extractor() as extractor:
                extractor.input(self.input_blob, ncnn.Mat(image).clone())
                for slot, blob in enumerate(self.output_blobs):
                    status, value = extractor.extract(blob)
                    if status != 0:
                        raise ModelFileError(f"{self.path.name}: NCNN could not compute {blob} (status {status})")
                    per_output[slot].append(np.array(value, dtype=np.float32))
        return [np.stack(values) for values in per_output]

    def native(self) -> Any:
        """The ``ncnn.Net``."""
        return self.net

    def close(self) -> None:
        net, self.net = getattr(self, "net", None), None
        if net is not None:
            net.clear()
