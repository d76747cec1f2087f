"""TensorRT itself: the lazy import, a logger that keeps its errors, and its factories as one-line errors."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from ..._lazy import lazy_import
from ...errors import DeviceError, first_line

_log = logging.getLogger("resnet_edge.tensorrt")


def import_tensorrt() -> ModuleType:
    return lazy_import("tensorrt", extra="tensorrt")


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps error messages (for one-line exceptions) and forwards the rest."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            levels = trt.ILogger.Severity
            if severity in (levels.INTERNAL_ERROR, levels.ERROR):
                self.errors.append(str(msg))
                _log.error(msg)
            elif severity == levels.WARNING:
                _log.warning(msg)
            else:
                _log.debug(msg)

        def first_error(self, default: str = "no reason given") -> str:
            return first_line(self.errors[0]) if self.errors else default

    return CollectingLogger()


def create(logger: Any, factory: Any, *args: Any) -> Any:
    """``factory(*args)`` for ``trt.Builder``, ``trt.OnnxParser`` or ``trt.Runtime``, as a one-line DeviceError when
    TensorRT cannot start (CUDA or library trouble): it then returns null, which its bindings raise as a TypeError.
    """
    try:
        return factory(*args)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        reason = logger.first_error("it logged no reason; is the NVIDIA driver working?")
        raise DeviceError(f"TensorRT cannot create its {factory.__name__} ({reason})") from None
