"""``resnet-edge``: one thin command per library call (parse, call, print), grouped by what they work on.

Heavy libraries are imported inside the commands, so ``resnet-edge --help`` starts without TensorFlow. Every
``ResnetEdgeError`` reaches the user as one ``error:`` line with exit code 2 (``main``).
"""

from __future__ import annotations

import sys
import warnings

import typer

from ..errors import ResnetEdgeError
from . import doctor, exporting, measuring, modeling, running, serving  # noqa: F401  (each registers its commands)
from .common import OPTIONAL_VALUES, app, warn


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.exit(code)


def fill_optional_values(argv: list[str]) -> list[str]:
    """``--ray`` with no value (last, or before another option) becomes ``--ray=local``."""
    filled = []
    for position, token in enumerate(argv):
        following = argv[position + 1] if position + 1 < len(argv) else None
        if token in OPTIONAL_VALUES and (following is None or following.startswith("-")):
            token = f"{token}={OPTIONAL_VALUES[token]}"
        filled.append(token)
    return filled


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors on stderr, exit code 2 (130 on Ctrl-C)."""
    warnings.showwarning = lambda message, *args, **kwargs: warn(message)
    command = typer.main.get_command(app)
    try:
        args = fill_optional_values(sys.argv[1:] if argv is None else list(argv))
        code = command.main(args=args, prog_name="resnet-edge", standalone_mode=False)
    except ResnetEdgeError as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        fail(f"{exc.filename or 'file system'}: {exc.strerror or exc}", 2)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # the CLI library's usage errors
            fail(exc.format_message(), exc.exit_code)
        raise
    if code == 130:  # the CLI library turns Ctrl-C into exit code 130
        sys.stderr.write("interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
