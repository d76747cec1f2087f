"""The two registries: one row per backend (a runtime that runs artifacts) and one per export format.

Everything else asks these tables: which suffix opens with which backend, where a container keeps its
metadata, which options a format takes (the CLI makes its flags from them), which devices a backend runs
on, whether it can expose intermediate tensors for the layer-wise diagnosis. Code is named as
``"module:attribute"`` and imported on first use, so reading the tables imports no runtime.

A new backend is a module under ``runtime/`` plus one ``BackendEntry``; a new format is a converter under
``export/`` plus one ``FormatEntry`` (the README's "Adding a format or backend" walks through both).
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError, ModelFileError

DEVICES = ("auto", "cpu", "cuda", "tensorrt-ep", "jetson")
DEVICE_HELP = {
    "cpu": "the host CPU",
    "cuda": "an NVIDIA GPU through CUDA",
    "tensorrt-ep": "ONNX Runtime's TensorRT execution provider (an NVIDIA GPU)",
    "jetson": "an NVIDIA Jetson (integrated GPU, DLA cores)",
}


def resolve(target: str) -> Any:
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
    """A runtime: the Backend class, the files it opens, its metadata container and its devices.

    ``devices`` are in order of preference for ``device="auto"`` (the class's ``available_devices()``
    says which this machine has). ``also_runs`` are suffixes it runs only when asked by name
    (``backend="openvino"`` for an ``.onnx``). ``intermediates`` names a function ``(path) ->
    runtime.base.Intermediates`` that opens the artifact with its intermediate tensors readable.
    ``companions`` are files that belong to the main one (OpenVINO's ``.bin`` beside the ``.xml``).
    ``activation_scales`` names a function ``(path) -> {tensor: scale}`` reading an int8 artifact's activation
    scales (what ``--calib-report`` compares).
    """

    name: str
    target: str
    suffixes: tuple[str, ...]
    container: Container | None
    devices: tuple[str, ...]
    extra: str
    also_runs: tuple[str, ...] = ()
    intermediates: str | None = None
    activation_scales: str | None = None
    companions: tuple[str, ...] = ()
    description: str = ""
    needs: str = "its runtime"

    @property
    def runs_on_cpu(self) -> bool:
        return "cpu" in self.devices


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


def _options(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


# Options shared by several formats ------------------------------------------------------------

OPSET = Option("opset", 17, "ONNX opset (13-18).", int, tuple(range(13, 19)))
INT8_SOFTMAX = Option("int8_softmax", False, "Keep the classifier's softmax in the integer graph (int8 "
                      "probabilities) instead of logits out.", bool)
FLOAT_LAYERS = Option("float_layers", (), "Keras layers to keep in float, comma-separated.", tuple)
CALIB_METHOD = Option("calib_method", "minmax", "Calibration: minmax, entropy or percentile.", str,
                      ("minmax", "entropy", "percentile"))
INT8 = (INT8_SOFTMAX, FLOAT_LAYERS)

BACKENDS: dict[str, BackendEntry] = {
    row.name: row
    for row in (
        BackendEntry("keras", "resnet_edge.runtime.keras:KerasBackend", (".keras", ".h5"),
                   Container("resnet_edge.artifact:read_keras", "resnet_edge.artifact:write_keras"),
                   ("cuda", "cpu"), "export", description="the float reference (TensorFlow)"),
        BackendEntry("onnxruntime", "resnet_edge.runtime.onnxrt:OnnxRuntimeBackend", (".onnx",),
                   Container("resnet_edge.artifact:read_onnx", "resnet_edge.artifact:write_onnx"),
                   ("tensorrt-ep", "cuda", "cpu"), "onnxruntime",
                   intermediates="resnet_edge.runtime.onnxrt:intermediates",
                   activation_scales="resnet_edge.calib_report:onnx_activation_scales", description="ONNX Runtime"),
        BackendEntry("tflite", "resnet_edge.runtime.tflite:TFLiteBackend", (".tflite",),
                   Container("resnet_edge.artifact:read_tflite", "resnet_edge.artifact:write_tflite"),
                   ("cpu",), "tflite", intermediates="resnet_edge.runtime.tflite:intermediates",
                   activation_scales="resnet_edge.calib_report:tflite_activation_scales",
                   description="LiteRT (TFLite) with XNNPACK"),
        BackendEntry("tensorrt", "resnet_edge.runtime.tensorrt:TensorRTBackend", (".engine", ".plan"),
                   Container("resnet_edge.artifact:read_engine", "resnet_edge.artifact:write_engine"),
                   ("jetson", "cuda"), "tensorrt", description="TensorRT engines (NVIDIA GPU, Jetson)",
                   needs="an NVIDIA GPU with TensorRT"),
        BackendEntry("openvino", "resnet_edge.runtime.openvino:OpenVINOBackend", (".xml",),
                   Container("resnet_edge.artifact_openvino:read_openvino",
                             "resnet_edge.artifact_openvino:write_openvino"),
                   ("cpu",), "openvino", also_runs=(".onnx",), companions=(".bin",),
                   activation_scales="resnet_edge.calib_report:openvino_activation_scales",
                   description="OpenVINO (Intel CPUs; IR or ONNX)"),
    )
}

_INT8_ONNX = _options(OPSET, *INT8, Option("scheme", "u8s8", "u8s8 (uint8 activations, int8 weights: what ONNX "
                                           "Runtime fuses on x86) or s8s8 (symmetric int8, for TensorRT).", str,
                                           ("u8s8", "s8s8")), CALIB_METHOD)
_TRT = _options(
    Option("precision", "fp32", "fp32, fp16 or int8.", str, ("fp32", "fp16", "int8")),
    Option("workspace", 4096, "Workspace MiB.", int),
    Option("batch", "1,1,1", "Optimization profile min,opt,max batch.", str),
    Option("dla_core", None, "DLA core (Jetson), with GPU fallback.", int),
    Option("timing_cache", None, "Timing cache file (read and updated).", Path),
    Option("hardware_compatibility", False, "Ampere+ compatible engine.", bool),
    CALIB_METHOD, OPSET, *INT8,
)

FORMATS: dict[str, FormatEntry] = {
    row.name: row
    for row in (
        FormatEntry("onnx", "resnet_edge.export.onnx:convert", ".onnx", "fp32", "onnxruntime",
                  "ONNX fp32 (tf2onnx), dynamic batch", _options(OPSET)),
        FormatEntry("onnx-fp16", "resnet_edge.export.onnx_fp16:convert", ".onnx", "fp16", "onnxruntime",
                  "ONNX fp16 weights and compute, fp32 inputs/outputs", _options(OPSET), tag="fp16"),
        FormatEntry("onnx-int8", "resnet_edge.export.onnx_int8:convert", ".onnx", "int8", "onnxruntime",
                  "ONNX Runtime static QDQ int8, per-channel weights", _INT8_ONNX, tag="int8"),
        FormatEntry("tflite", "resnet_edge.export.tflite:convert", ".tflite", "fp32", "tflite", "TFLite float32"),
        FormatEntry("tflite-fp16", "resnet_edge.export.tflite:convert", ".tflite", "fp16", "tflite",
                  "TFLite float16 weights", tag="fp16"),
        FormatEntry("tflite-int8", "resnet_edge.export.tflite:convert", ".tflite", "int8", "tflite",
                  "TFLite full-integer int8 (int8/uint8 in and out)",
                  _options(Option("io", "int8", "int8 or uint8 input/output.", str, ("int8", "uint8")), *INT8),
                  tag="int8"),
        FormatEntry("trt", "resnet_edge.export.tensorrt:convert", ".engine", "fp32", "tensorrt",
                  "TensorRT engine, strongly typed, from ONNX", _TRT, aliases=("tensorrt", "engine"), tag="trt",
                  extra="tensorrt"),
        FormatEntry("openvino", "resnet_edge.export.openvino:convert_float", ".xml", "fp32", "openvino",
                  "OpenVINO IR, inference precision recorded (f32, or bf16 where the CPU has it)",
                  _options(Option("inference_precision", "f32", "f32, or bf16 where the CPU has it (recorded; "
                                  "OpenVINO would otherwise pick bf16 by itself on AMX CPUs).", str, ("f32", "bf16")),
                           OPSET),
                  tag="openvino", extra="openvino",
                  variants=({"inference_precision": "bf16", "when": "resnet_edge.runtime.openvino:has_bf16"},)),
        FormatEntry("openvino-int8", "resnet_edge.export.openvino:convert_int8", ".xml", "int8", "openvino",
                  "OpenVINO IR int8 (NNCF post-training quantization, or the project's Q/DQ ONNX)",
                  # qdq is the default because it measured better: ResNet-50 @224 on photos (make bench, AMD EPYC),
                  # qdq 100 % of 216 decisive crops at 5.77 ms, NNCF 92.6 % (fails parity) at 5.57 ms
                  _options(Option("method", "qdq", "qdq (convert the project's calibrated Q/DQ ONNX) or nncf "
                                  "(NNCF post-training quantization of the IR from the same calibration set).", str,
                                  ("qdq", "nncf")), OPSET, *INT8),
                  tag="openvino_int8", extra="openvino", variants=({"method": "nncf"},)),
    )
}


def resolve_format(name: str) -> FormatEntry:
    """A format by name or alias; an unknown one is an error naming the nearest valid format."""
    key = name.lower().strip()
    for row in FORMATS.values():
        if key == row.name or key in row.aliases:
            return row
    names = list(FORMATS) + [a for f in FORMATS.values() for a in f.aliases]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise InvalidArgumentError(f"unknown format {name!r}{hint} (valid: {', '.join(FORMATS)})")


def backend_row(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def known_suffixes() -> list[str]:
    return sorted(s for row in BACKENDS.values() for s in row.suffixes)


def row_for_file(path: str | os.PathLike[str]) -> BackendEntry:
    """The backend row whose files end like ``path``; an unknown suffix is a one-line ModelFileError."""
    suffix = Path(path).suffix.lower()
    for row in BACKENDS.values():
        if suffix in row.suffixes:
            return row
    raise ModelFileError(f"{path}: unknown model suffix {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(known_suffixes())}")


def companions_of(path: str | os.PathLike[str]) -> list[Path]:
    """The files that belong with an artifact (``model.bin`` beside ``model.xml``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    rows = [row for row in BACKENDS.values() if suffix in row.suffixes]
    return [path.with_suffix(extra) for row in rows for extra in row.companions]


__all__ = ["BACKENDS", "DEVICES", "FORMATS", "BackendEntry", "Container", "FormatEntry", "Option", "backend_row",
           "companions_of", "known_suffixes", "resolve", "resolve_format", "row_for_file"]
