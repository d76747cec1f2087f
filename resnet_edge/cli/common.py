"""What every command shares: the consoles, the common options, one-line printing, and the format-option flags
made from the registry's rows."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..errors import InvalidArgumentError
from ..metadata import RESIZE_POLICIES
from ..registry import BACKENDS, FORMATS, Option, device_help, known_suffixes

app = typer.Typer(
    name="resnet-edge",
    help="Keras ResNet to a fast, verified model on an edge device (ONNX, TFLite, OpenVINO, NCNN, TensorRT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables keep their columns when piped to a file or CI log (rich would assume 80 columns there).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary only.")]
RESIZE_HELP = (f"How frames of another shape reach the input size ({', '.join(RESIZE_POLICIES)}); "
               "recorded in the model and followed by every artifact.")
ResizeOption = Annotated[str, typer.Option(help=RESIZE_HELP)]
DEVICE_TEXT = "auto (the first that works), " + ", ".join(f"{name} ({text})" for name, text in device_help().items()) + "."
DeviceOption = Annotated[str, typer.Option(help=DEVICE_TEXT)]
BackendOption = Annotated[str | None, typer.Option(help=f"Run with this backend instead of the one the suffix names "
                                                        f"({', '.join(BACKENDS)}; e.g. an .onnx with openvino).")]
RAY_HELP = ("Run on Ray (pip install 'resnet-edge\\[scale]'): a local Ray on 127.0.0.1 when no ADDRESS is given "
            "(or $RAY_ADDRESS when set), else the cluster at ADDRESS (auto, HOST:6379 or ray://HOST:10001).")
RayOption = Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help=RAY_HELP)]
ArtifactArgument = Annotated[Path, typer.Argument(help=f"Any artifact: {', '.join(known_suffixes())}.")]
OPTIONAL_VALUES = {"--ray": "local"}  # options whose value may be left out


def extra(name: str) -> str:
    """``pip install 'resnet-edge[name]'`` as help text: the bracket escaped, or Rich's markup would swallow it."""
    return f"pip install 'resnet-edge\\[{name}]'"


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x160`` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise InvalidArgumentError(f"input size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise InvalidArgumentError(f"input size must be N or HxW, got {text!r}")


def split_list(text: str | None) -> list[str] | None:
    """``a,b , c`` as ``["a", "b", "c"]`` (None stays None)."""
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def say(message: str) -> None:
    err.print(message, style="dim", markup=False)


def warn(message: object) -> None:
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def command_line() -> str | None:
    """The command as typed, for a report's receipt."""
    return "resnet-edge " + " ".join(sys.argv[1:]) if sys.argv[1:] else None


def _format_options() -> list[inspect.Parameter]:
    """One CLI option per export option in the format rows, its help naming the formats that take it."""
    uses: dict[str, list[tuple[str, Option]]] = {}
    for fmt in FORMATS.values():
        for option in fmt.options.values():
            uses.setdefault(option.name, []).append((fmt.name, option))
    parameters = []
    for name, pairs in uses.items():
        by_help: dict[str, list[str]] = {}
        for fmt_name, option in pairs:
            by_help.setdefault(option.help, []).append(fmt_name)
        text = " ".join(f"{', '.join(names)}: {help_text}" for help_text, names in by_help.items())
        option = pairs[0][1]
        kind = {tuple: str, bool: bool, Path: Path}.get(option.kind, option.kind)
        if kind is bool:
            info = typer.Option(option.flag, help=text, metavar="")
        else:
            info = typer.Option(help=text, metavar="|".join(map(str, option.choices)) if option.choices else None)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind | None, info]))
    return parameters


def with_format_options(command):
    """Give ``command`` the format rows' options as flags; it receives them as ``format_options``."""
    signature = inspect.signature(command, eval_str=True)
    base = [p for p in signature.parameters.values() if p.name != "format_options"]
    extra = _format_options()
    names = {p.name for p in extra}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return command(**kwargs, format_options=given)

    wrapper.__signature__ = signature.replace(parameters=base + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in base + extra}
    return wrapper
