"""User-facing errors: each carries a one-line message the CLI prints as is."""

from __future__ import annotations


class ResnetEdgeError(Exception):
    """Base for every error a user can cause or fix; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class MissingDependencyError(ResnetEdgeError):
    """An optional runtime or converter is not installed."""


class InvalidArgumentError(ResnetEdgeError):
    """An argument, option or combination of options is not valid."""


class ModelFileError(ResnetEdgeError):
    """A model or artifact file is missing, truncated, of the wrong kind or inconsistent."""


class DataError(ResnetEdgeError):
    """Images or arrays that cannot serve as the requested data."""


class DeviceError(ResnetEdgeError):
    """The requested device or execution provider is not available."""


class ExportError(ResnetEdgeError):
    """Conversion to a deployable format failed."""


class ParityError(ExportError):
    """An artifact's outputs are outside its precision's tolerance of the float model."""
