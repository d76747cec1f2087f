"""Import heavy optional dependencies only when they are used."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from ._quiet import quiet
from .errors import MissingDependencyError


def lazy_import(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc.name or module} missing): pip install 'resnet-edge[{extra}]'"
        ) from exc


def import_keras() -> ModuleType:
    """Keras on the TensorFlow backend, with TensorFlow's start-up chatter silenced."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's native logging ignores TF_CPP_MIN_LOG_LEVEL at import and device discovery.
    with quiet():
        tf = lazy_import("tensorflow", extra="export")
        tf.config.list_physical_devices("GPU")
        return lazy_import("keras", extra="export")


def import_tensorflow() -> ModuleType:
    import_keras()
    return lazy_import("tensorflow", extra="export")
