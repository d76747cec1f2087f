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


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error (or its type name), cut to ``limit`` characters: for one-line messages."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line and isinstance(error, BaseException):
        line = type(error).__name__
    return line[:limit]
