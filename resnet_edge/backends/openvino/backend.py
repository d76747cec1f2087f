"""OpenVINO on the CPU: an IR (``.xml`` + ``.bin``) or a plain ``.onnx``, at an explicit inference precision."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..._lazy import lazy_import
from ...errors import DeviceError, MissingDependencyError, ModelFileError, ResnetEdgeError, first_line
from ...metadata import check_input_shape
from ...preprocess import InputSpec
from ...runtime import Backend
from .container import read_openvino, read_openvino_model

OV_DEVICES = {"cpu": "CPU"}
PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}  # hint value -> CPU capability that runs it
OV_TYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i8": "int8"}
PERFORMANCE_HINT = "LATENCY"


def _ov():
    return lazy_import("openvino", extra="openvino")


def cpu_capabilities(core=None) -> tuple[str, ...]:
    """What OpenVINO says this CPU can compute in (``FP32``, ``BF16``, ``INT8``, ...)."""
    core = core or _ov().Core()
    return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def has_bf16() -> bool:
    """Whether OpenVINO is installed and can run bf16 on this CPU (the ``openvino`` format's bf16 variant)."""
    try:
        return PRECISIONS["bf16"] in cpu_capabilities()
    except MissingDependencyError:
        return False


class OpenVINOBackend(Backend):
    """An OpenVINO IR or ONNX file compiled for the CPU.

    Compiled with ``PERFORMANCE_HINT=LATENCY`` (one stream: the fastest single request, which is how the
    Predictor calls it) and, when ``threads`` is given, ``INFERENCE_NUM_THREADS``; otherwise with OpenVINO's
    own thread count. ``INFERENCE_PRECISION_HINT`` is always set, to the
    artifact's ``extra["inference_precision"]`` (``f32`` when absent, as for a plain ``.onnx``): left unset,
    OpenVINO runs an fp32 model in bf16 on CPUs with AMX. The precision the compiled model really uses is
    read back as ``inference_precision``, and a precision the CPU cannot run is a DeviceError rather than a
    silent fallback. The model is compiled with a dynamic batch, so a batch of any size runs (a static
    batch-1 compile measured 3-6 % faster on ResNet-50 at batch 1, not worth a recompile per batch size).
    Each calling thread gets its own infer request, so the Predictor need not serialise calls.
    """

    name = "openvino"

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        _ov()
        return ("cpu",)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        path = Path(path)
        self.path = path
        if device not in OV_DEVICES:
            raise DeviceError(f"the openvino backend runs on {', '.join(OV_DEVICES)}, not {device}")
        ov = _ov()
        self.core = core = ov.Core()
        model = self._read(core, path)
        precision = str((self.metadata.extra if self.metadata else {}).get("inference_precision", "f32"))
        if precision not in PRECISIONS:
            raise ModelFileError(f"{path}: unknown inference precision {precision!r} in its metadata "
                                 f"(expected one of {', '.join(PRECISIONS)})")
        if PRECISIONS[precision] not in cpu_capabilities(core):
            raise DeviceError(f"{path.name} asks for {precision} inference but this CPU has no "
                              f"{PRECISIONS[precision]} support (OpenVINO reports {', '.join(cpu_capabilities(core))})")
        self.input_spec = self._input_spec(model, path)
        if model.inputs[0].get_partial_shape()[0].is_static:
            model.reshape({model.inputs[0]: [-1, *self.input_spec.size, self.input_spec.channels]})
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": PERFORMANCE_HINT}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, OV_DEVICES[device], config)
        except Exception as exc:
            raise ModelFileError(f"{path}: OpenVINO cannot compile it for {device} ({first_line(exc, 200)})") from exc
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self.inference_precision != precision:
            raise DeviceError(f"{path.name}: asked OpenVINO for {precision} inference, it runs {self.inference_precision}")
        self.output_names = [self._name(output, index) for index, output in enumerate(self.compiled.outputs)]
        self._local = threading.local()

    def _read(self, core, path: Path):
        """The ov.Model of the file, with ``self.metadata`` set; every failure is a one-line ModelFileError."""
        if path.suffix.lower() == ".xml":
            self.metadata = read_openvino(path)  # also rejects a corrupt xml before OpenVINO sees it
            weights = path.with_suffix(".bin")
            if not weights.is_file():
                raise ModelFileError(f"{path}: its weights file {weights.name} is missing (an IR is the .xml and the "
                                     ".bin beside it)")
            recorded = self.metadata.extra.get("weights_bytes") if self.metadata else None
            if recorded is not None and weights.stat().st_size != recorded:
                raise ModelFileError(f"{path}: weights file does not match ({weights.name} has {weights.stat().st_size} "
                                     f"bytes, the model was saved with {recorded}; copy the .xml and .bin together)")
            sources = (str(path), str(weights))
        else:
            sources = (str(path),)
        try:
            model = core.read_model(*sources)
        except Exception as exc:
            raise ModelFileError(f"{path}: OpenVINO cannot read it ({first_line(exc, 200)})") from exc
        if self.metadata is None:
            try:
                self.metadata = read_openvino_model(model, str(path))
            except ResnetEdgeError:
                raise
            except Exception as exc:
                raise ModelFileError(f"{path}: unreadable metadata ({first_line(exc, 200)})") from exc
        return model

    def _input_spec(self, model, path: Path) -> InputSpec:
        inputs = model.inputs
        shape = inputs[0].get_partial_shape() if len(inputs) == 1 else None
        if shape is None or shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ModelFileError(f"{path}: expected one NHWC image input, found "
                                 f"{[(self._name(i, n), str(i.get_partial_shape())) for n, i in enumerate(inputs)]}")
        dims = [shape[i] for i in (1, 2, 3)]
        if not all(d.is_static for d in dims) or dims[2].get_length() != 3:
            raise ModelFileError(f"{path}: input {self._name(inputs[0], 0)} needs a fixed NHWC size, got {shape}")
        element = inputs[0].get_element_type().get_type_name()
        dtype = OV_TYPES.get(element)
        if dtype is None:
            raise ModelFileError(f"{path}: unsupported input type {element}")
        height, width, channels = check_input_shape([d.get_length() for d in dims], str(path),
                                                    f"input {self._name(inputs[0], 0)}")
        quantization = self.metadata.input_quantization if self.metadata else None
        return InputSpec(height, width, channels, dtype, quantization)

    @staticmethod
    def _name(port, index: int) -> str:
        try:
            return port.get_any_name()
        except RuntimeError:  # a port without a tensor name
            return f"output_{index}"

    def native(self):
        """The ``openvino.CompiledModel`` itself: an escape hatch for what the Predictor does not cover."""
        return self.compiled

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:  # one request per thread: an InferRequest is not to be shared between threads
            request = self._local.request = self.compiled.create_infer_request()
        outputs = request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True, share_outputs=True)
        return [np.array(output, dtype=np.float32) for output in outputs.to_tuple()]  # copies: the request reuses them

    def close(self) -> None:
        self._local = threading.local()
        self.compiled = None
