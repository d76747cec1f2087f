"""The registry: the one list of runtimes, the rows each runtime declares, and the lookups everything else asks.

A runtime is one folder, ``resnet_edge/backends/<name>/``, whose ``__init__.py`` declares ``RUNTIME``: one
``BackendEntry`` (the runtime that runs artifacts: its Backend class, suffixes, metadata container, devices and
hooks) and its ``FormatEntry`` rows (the export formats it owns: converter, options, precision, variants). Code is
named as ``"module:attribute"`` and imported on first use, so reading the rows imports no runtime; the rows
themselves are read on the first lookup. Adding a runtime is its folder plus one name in ``RUNTIMES`` (and its
pip extra): the CLI's flags and help, ``benchmark --all``, ``optimize``, ``--calib-report``, ``--max-drop``, the
layer-wise diagnosis and the report's tool versions all ask the rows.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError, ModelFileError

# The one list of runtimes: a folder resnet_edge/backends/<name>/ each, in the order tables list them.
RUNTIMES = ("keras", "onnxruntime", "tflite", "openvino", "tensorrt", "ncnn")
REFERENCE = "keras"  # the float model's runtime: every artifact is checked against it
KERAS_SUFFIXES = (".keras", ".h5")  # the float model's files (the reference runtime's row runs them)


def load_target(target: str) -> Any:
    """The object a ``"module:attribute"`` target names."""
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Option:
    """One export option: its default, type, allowed values and help (the CLI flag is made from it)."""

    name: str
    default: Any
    help: str
    kind: type = str
    choices: tuple[Any, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` in this option's type; a wrong type or a value outside ``choices`` is one-line error."""
        if value is None:
            return None
        try:
            if self.kind is tuple:
                value = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)
            elif self.kind is bool:
                if not isinstance(value, bool):
                    raise TypeError
            elif self.kind is Path:
                value = str(value)
            else:
                value = self.kind(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{self.flag} takes a {self.kind.__name__}, not {value!r}") from None
        if self.choices and value not in self.choices:
            raise InvalidArgumentError(f"{self.flag} must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        return value


@dataclass(frozen=True)
class Container:
    """Where an artifact file keeps its ModelMetadata: ``read(path)`` and ``write(path, metadata)`` targets."""

    read: str
    write: str


@dataclass(frozen=True)
class BackendEntry:
    """A runtime that runs artifacts: the Backend class, the files it opens, its metadata container and devices.

    ``devices`` are in order of preference for ``device="auto"`` (the class's ``available_devices()`` says which
    this machine has), each explained in ``device_help``; ``device_classes`` names a subclass for one device (the
    Jetson's DLA and zero-copy buffers). ``also_runs`` are suffixes it runs only when asked by name
    (``backend="openvino"`` for an ``.onnx``). ``companions`` are files that belong to the main one (a ``.bin``
    beside the ``.xml``). Hooks, ``"module:function"`` each: ``intermediates`` ``(path) -> runtime.Intermediates``
    opens an artifact with its intermediate tensors readable (the layer-wise diagnosis, ``--max-drop``);
    ``activation_scales`` ``(path) -> {tensor: scale}`` reads an int8 artifact's activation scales
    (``--calib-report``). ``tools`` are the distributions whose versions a report lists. ``probe``
    ``() -> dict`` says what this machine really gives the runtime (``resnet-edge doctor``): ``devices`` {device:
    {"ok": bool, "detail": str}} from a real one-node run or a real device query, ``facts`` (versions, libraries),
    ``missing`` (install lines), ``exports`` {format: why it cannot be exported here}, ``selftest`` {format: [{"options":
    {...}, "devices": [...]}]} (the hardware paths ``doctor --selftest`` adds: precisions, a DLA core).
    """

    name: str
    target: str
    suffixes: tuple[str, ...]
    container: Container | None
    devices: tuple[str, ...]
    extra: str
    device_help: Mapping[str, str] = field(default_factory=dict)
    device_classes: Mapping[str, str] = field(default_factory=dict)
    also_runs: tuple[str, ...] = ()
    intermediates: str | None = None
    activation_scales: str | None = None
    companions: tuple[str, ...] = ()
    description: str = ""
    needs: str = "its runtime"
    tools: tuple[str, ...] = ()
    probe: str | None = None

    @property
    def runs_on_cpu(self) -> bool:
        return "cpu" in self.devices

    def backend_class(self, device: str | None = None) -> Any:
        """The Backend class that runs on ``device`` (a device's own subclass where the row names one)."""
        return load_target(self.device_classes.get(device or "", self.target))


@dataclass(frozen=True)
class FormatEntry:
    """An export format: its converter ``convert(job) -> ModelMetadata``, file suffix, precision and options.

    ``precision`` is the default one; a format with a ``precision`` option (TensorRT) takes it from there. int8
    formats need a CalibrationSet. ``tag`` goes into the default file name (``model_int8.tflite``);
    ``variants`` are further option sets ``optimize`` tries (OpenVINO at bf16), each with a ``"when"`` target
    saying whether this machine can. Which export features a format takes (``--max-drop``, ``--calib-report``)
    follows from its options and its backend's hooks: ``refusal`` says why not, in one line.
    """

    name: str
    target: str
    suffix: str
    precision: str
    backend: str
    description: str
    options: Mapping[str, Option] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    tag: str = ""
    extra: str = "export"
    variants: tuple[Mapping[str, Any], ...] = ()
    install: str = ""  # what exporting needs besides its extra, as an install line

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: option.default for name, option in self.options.items()}

    @property
    def runs_on_cpu(self) -> bool:
        return BACKENDS[self.backend].runs_on_cpu

    @property
    def companions(self) -> tuple[str, ...]:
        return BACKENDS[self.backend].companions

    @property
    def calibrated(self) -> bool:
        """int8 with its default options (TensorRT is int8 only with ``--precision int8``)."""
        return self.needs_calibration()

    def precision_for(self, options: Mapping[str, Any] | None = None) -> str:
        """The precision an export with ``options`` has: the ``precision`` option where the format has one."""
        chosen = (options or {}).get("precision") if "precision" in self.options else None
        return str(chosen or (self.options["precision"].default if "precision" in self.options else self.precision))

    def needs_calibration(self, options: Mapping[str, Any] | None = None) -> bool:
        """int8 exports need calibration images: the one test of "is int8" in the project."""
        return self.precision_for(options) == "int8"

    def refusal(self, feature: str, options: Mapping[str, Any] | None = None) -> str | None:
        """Why this format (with ``options``) does not take an export feature, or None when it does.

        ``max_drop``: int8, a ``float_layers`` option, and a backend whose intermediate tensors can be read (the
        diagnosis names the layers to keep float). ``calib_report``: int8 and a backend that reads activation scales.
        """
        if feature not in FEATURES:
            raise InvalidArgumentError(f"unknown export feature {feature!r}")
        why = self._missing(feature, options)
        if why is None:
            return None
        takers = ", ".join(f.name for f in FORMATS.values() if f._missing(feature, {"precision": "int8"}) is None)
        flag = "--" + feature.replace("_", "-")
        return f"{flag} applies to {takers}; not to {self.name}, {why}"

    def _missing(self, feature: str, options: Mapping[str, Any] | None) -> str | None:
        backend = BACKENDS[self.backend]
        if not self.needs_calibration(options):
            return f"which is {self.precision_for(options)}, not int8"
        if feature == "max_drop" and "float_layers" not in self.options:
            return "which cannot keep layers float"
        if feature == "max_drop" and backend.intermediates is None:
            return f"whose runtime ({backend.name}) does not expose the intermediate tensors the diagnosis reads"
        if feature == "calib_report" and backend.activation_scales is None:
            return f"whose runtime ({backend.name}) cannot read activation scales back"
        return None

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated with ``given`` (checked); an option this format does not take is an error."""
        given = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            applicable = ", ".join(o.flag for o in self.options.values()) or "none"
            flags = ", ".join(f"--{o.replace('_', '-')}" for o in unknown)
            raise InvalidArgumentError(f"{flags} does not apply to {self.name} (options for {self.name}: {applicable})")
        return {**self.defaults, **{k: self.options[k].check(v) for k, v in given.items()}}


FEATURES = ("max_drop", "calib_report")  # export features a format takes or refuses (FormatEntry.refusal)


@dataclass(frozen=True)
class Runtime:
    """What a runtime folder declares: its backend row and the export formats it owns."""

    backend: BackendEntry
    formats: tuple[FormatEntry, ...] = ()


FEATURES = ("max_drop", "calib_report")  # export features a format takes or refuses (FormatEntry.refusal)


def options(*given: Option) -> dict[str, Option]:
    """Format options by name, in the order given (each becomes a CLI flag)."""
    return {o.name: o for o in given}


# Options shared by several formats ------------------------------------------------------------

OPSET = Option("opset", 17, "ONNX opset (13-18).", int, tuple(range(13, 19)))
INT8_SOFTMAX = Option("int8_softmax", False, "Keep the classifier's softmax in the integer graph (int8 "
                      "probabilities) instead of logits out.", bool)
FLOAT_LAYERS = Option("float_layers", (), "Keras layers to keep in float, comma-separated.", tuple)
CALIB_METHOD = Option("calib_method", "minmax", "Calibration: minmax, entropy or percentile.", str,
                      ("minmax", "entropy", "percentile"))
INT8 = (INT8_SOFTMAX, FLOAT_LAYERS)

class _Rows(Mapping[str, Any]):
    """Rows by name, read from every runtime folder on first use (so that importing the registry stays light)."""

    def __init__(self, pick: Callable[[Runtime], list[Any]]) -> None:
        self._pick = pick
        self._rows: dict[str, Any] | None = None

    def _table(self) -> dict[str, Any]:
        if self._rows is None:
            self._rows = {row.name: row for runtime in runtimes() for row in self._pick(runtime)}
        return self._rows

    def __getitem__(self, name: str) -> Any:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __setitem__(self, name: str, row: Any) -> None:
        """Plant a row (a test's stand-in runtime); the declared rows are read first."""
        self._table()[name] = row

    def __delitem__(self, name: str) -> None:
        del self._table()[name]

    def __repr__(self) -> str:
        return f"<rows {', '.join(self)}>"


_runtimes: list[Runtime] = []


def runtimes() -> list[Runtime]:
    """Every runtime's declaration, in ``RUNTIMES`` order (each folder's ``__init__`` holds rows only)."""
    if not _runtimes:
        declared = []
        for name in RUNTIMES:
            runtime = importlib.import_module(f"{__package__}.backends.{name}").RUNTIME
            if runtime.backend.name != name:
                raise RuntimeError(f"backends/{name} declares the backend {runtime.backend.name!r}")
            declared.append(runtime)
        _runtimes.extend(declared)
    return _runtimes


BACKENDS: Mapping[str, BackendEntry] = _Rows(lambda runtime: [runtime.backend])
FORMATS: Mapping[str, FormatEntry] = _Rows(lambda runtime: list(runtime.formats))


def devices() -> tuple[str, ...]:
    """``auto`` and every device some backend runs on."""
    found = dict.fromkeys(d for row in BACKENDS.values() for d in row.devices)
    return ("auto", *sorted(found, key=lambda d: (d != "cpu", d)))


def device_help() -> dict[str, str]:
    """What each device is, from the rows."""
    helps: dict[str, str] = {}
    for row in BACKENDS.values():
        for device, text in row.device_help.items():
            helps.setdefault(device, text)
    return helps


def find_format(name: str) -> FormatEntry:
    """A format by name or alias; an unknown one is an error naming the nearest valid format."""
    key = name.lower().strip()
    for row in FORMATS.values():
        if key == row.name or key in row.aliases:
            return row
    names = list(FORMATS) + [a for f in FORMATS.values() for a in f.aliases]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise InvalidArgumentError(f"unknown format {name!r}{hint} (valid: {', '.join(FORMATS)})")


def find_backend(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def known_suffixes() -> list[str]:
    return sorted(s for row in BACKENDS.values() for s in row.suffixes)


def backend_for_file(path: str | os.PathLike[str]) -> BackendEntry:
    """The backend row whose files end like ``path``; an unknown suffix is a one-line ModelFileError."""
    name = Path(path).name.lower()
    matches = [(len(s), row) for row in BACKENDS.values() for s in row.suffixes if name.endswith(s)]
    if not matches:
        suffix = Path(path).suffix.lower()
        raise ModelFileError(f"{path}: unknown model suffix {suffix or '(none)'!r}; "
                             f"expected one of {', '.join(known_suffixes())}")
    return max(matches, key=lambda match: match[0])[1]


def companions_of(path: str | os.PathLike[str]) -> list[Path]:
    """The files that belong with an artifact (``model.bin`` beside ``model.xml``: the main file's last suffix
    replaced, as ``atomic.atomic_path`` writes them)."""
    path = Path(path)
    try:
        row = backend_for_file(path)
    except ModelFileError:
        return []
    return [path.with_suffix(extra) for extra in row.companions]


def has_suffix(path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> bool:
    """Whether the file name ends in one of ``suffixes`` (which may have two parts: ``.ncnn.param``)."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in suffixes)


def cpu_formats() -> list[str]:
    """The formats whose runtime runs on a CPU, in registry order (what ``make bench`` and ``make demo`` export)."""
    return [name for name, row in FORMATS.items() if row.runs_on_cpu]


__all__ = ["BACKENDS", "FEATURES", "FORMATS", "REFERENCE", "RUNTIMES", "BackendEntry", "Container", "FormatEntry",
           "Option", "Runtime", "backend_for_file", "companions_of", "cpu_formats", "device_help",
           "devices", "find_backend", "find_format", "has_suffix", "known_suffixes", "load_target", "options", "runtimes"]
