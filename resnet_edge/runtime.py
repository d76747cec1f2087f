"""What a runtime folder (``resnet_edge/backends/<name>/``) implements, and nothing else.

- ``Backend``: a loaded artifact on one device, raw NHWC tensors in, float outputs out (the Predictor wraps it).
- ``ExportJob``: what a format's converter ``convert(job) -> ModelMetadata`` receives; it writes ``job.output``.
- ``Intermediates``: what a runtime's layer-wise hook returns, for the int8 diagnosis and the accuracy budget.

The registry's rows name these implementations as ``"module:attribute"`` strings, so nothing here imports a
runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import InvalidArgumentError
from .metadata import ModelMetadata
from .preprocess import InputSpec
from .registry import FormatEntry

Progress = Callable[[str], None]


class Backend(ABC):
    """A model loaded in one runtime on one device: NHWC batch of the input dtype in, float outputs out.

    Subclasses set ``name`` and implement ``__init__``/``run``/``native``; the devices a backend runs on
    are in its registry row. ``thread_safe=False`` makes the Predictor serialise calls.
    """

    name: ClassVar[str]
    thread_safe: ClassVar[bool] = True

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        self.path, self.device, self.threads = path, device, threads
        self.inference_precision: str | None = None  # what the runtime reports computing in, where it says
        self.metadata: ModelMetadata | None = None
        self.input_spec: InputSpec = InputSpec(0, 0)
        self.output_names: list[str] = []

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        """Devices this backend can use on this machine, cheapest check first."""
        return ("cpu",)

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one batch already in the input tensor's dtype; outputs dequantized to float32."""

    def native(self) -> Any:
        """The runtime's own handle (Keras model, ORT session, LiteRT interpreter, OpenVINO compiled model,
        TensorRT execution context): the one escape hatch for what the Predictor does not offer."""
        raise InvalidArgumentError(f"the {self.name} backend offers no native handle")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""


@dataclass
class Intermediates:
    """An artifact opened with its intermediate tensors readable, for the layer-wise diagnosis.

    ``tensors`` are ``(id, name)`` pairs in execution order, floats or dequantizable integers only, with
    names cleaned of the runtime's own decorations (Q/DQ suffixes) so they carry the Keras layer names;
    ``output`` is the id of the only model output (None when it cannot be read); ``run(batch, ids)``
    takes float pixels 0-255 and returns float32 values.
    """

    tensors: list[tuple[str, str]]
    output: str | None
    input_shape: tuple[int | None, ...]
    fixed_batch: int | None
    run: Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


@dataclass
class ExportJob:
    """Everything a format's ``convert`` needs; ``output`` is a temporary path it must write."""

    model: Any
    metadata: Any
    output: Path
    format: FormatEntry
    options: dict[str, Any]
    calibration: Any = None
    progress: Progress = lambda message: None


def ends_in_logits(job: ExportJob) -> bool:
    """An int8 export leaves a classifier's softmax out of the integer graph unless ``int8_softmax`` asks for it."""
    return (job.format.precision == "int8" and not job.options.get("int8_softmax")
            and job.metadata.output_activation == "softmax")


def calibration_extra(job: ExportJob, float_layers: tuple[str, ...]) -> dict[str, Any]:
    """What every int8 artifact records of its calibration and of the layers kept in float."""
    extra: dict[str, Any] = {"calibration_images": len(job.calibration), "calibration_source": job.calibration.source}
    if float_layers:
        extra["float_layers"] = sorted(float_layers)
    return extra


