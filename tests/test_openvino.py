"""OpenVINO: IR export (float f32/bf16, int8 by NNCF and from Q/DQ ONNX), the backend, metadata in the IR."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from resnet_edge.backends.openvino.backend import OpenVINOBackend, has_bf16
from resnet_edge.backends.openvino.container import read_openvino, write_openvino
from resnet_edge.errors import DeviceError, InvalidArgumentError, ModelFileError
from resnet_edge.exporter import export
from resnet_edge.predictor import Predictor

pytestmark = pytest.mark.slow

EXPORTS = {"f32": ("openvino", {"inference_precision": "f32"}), "bf16": ("openvino", {"inference_precision": "bf16"}),
           "nncf": ("openvino-int8", {"method": "nncf"}), "qdq": ("openvino-int8", {"method": "qdq"})}
HAS_BF16 = has_bf16()
# Measured on the digits model (400 held-out images): f32 100 %, bf16 99.75 %, NNCF int8 99.25 %, Q/DQ int8 99.75 %.
MIN_TOP1 = {"f32": 0.98, "bf16": 0.98, "nncf": 0.95, "qdq": 0.95}


def export_openvino(model_path: Path, name: str, output: Path, calibration=None, verify: bool = False, **options):
    return export(model_path, name, output, calibration=calibration, verify=verify, **options)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_model_path, calibration_set) -> dict[str, tuple[Path, object]]:
    """Every OpenVINO variant of the digits model, exported once: name -> (xml path, returned metadata).

    Verified on export (bf16 too where parity knows its tolerance), so export() itself runs the IR."""
    from resnet_edge.parity import TOLERANCES

    folder = tmp_path_factory.mktemp("openvino")
    results = {}
    for name, (fmt, options) in EXPORTS.items():
        path = folder / f"model_{name}.xml"
        verify = name != "bf16" or "bf16" in TOLERANCES
        result = export_openvino(trained_model_path, fmt, path, calibration_set, verify=verify, **options)
        assert result.path == path and path.with_suffix(".bin").is_file()
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # nothing temporary left
        results[name] = path, result.metadata
    return results


@pytest.fixture(scope="module")
def held_out(calibration_set):
    return calibration_set.holdout.sample(400, seed=5)


@pytest.fixture(scope="module")
def keras_outputs(trained_model, held_out) -> np.ndarray:
    return trained_model.predict(held_out.images.astype(np.float32), verbose=0)


def _copy_ir(path: Path, folder: Path, stem: str = "copy") -> Path:
    target = folder / f"{stem}.xml"
    shutil.copy(path, target)
    shutil.copy(path.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


@pytest.mark.parametrize("name", [n for n in EXPORTS if n != "bf16"])
def test_top1_agrees_with_keras(name, exported, held_out, keras_outputs) -> None:
    path, _ = exported[name]
    with Predictor(OpenVINOBackend(path, "cpu", threads=2)) as predictor:
        scores = np.concatenate([predictor(held_out.images[i : i + 64]) for i in range(0, len(held_out), 64)])
        assert predictor.backend.inference_precision == "f32"
    agreement = float((scores.argmax(1) == keras_outputs.argmax(1)).mean())
    assert agreement >= MIN_TOP1[name], f"{name}: top-1 agreement {agreement:.2%}"
    if name == "f32":
        assert np.abs(scores - keras_outputs).max() < 1e-4


@pytest.mark.parametrize("name", ["nncf", "qdq"])
def test_int8_ends_in_logits_and_records_its_calibration(name, exported, calibration_set, held_out) -> None:
    path, metadata = exported[name]
    assert metadata.format == "openvino-int8" and metadata.precision == "int8"
    assert metadata.output_activation == "linear"
    assert metadata.extra["method"] == name and metadata.extra["inference_precision"] == "f32"
    assert metadata.extra["calibration_images"] == len(calibration_set)
    assert metadata.extra["calibration_source"] == calibration_set.source
    assert ("nncf" in metadata.tools) == (name == "nncf") and "openvino" in metadata.tools
    with Predictor(OpenVINOBackend(path, "cpu", threads=2)) as predictor:
        assert not np.allclose(predictor(held_out.images[:8]).sum(axis=1), 1.0)  # logits, not probabilities
        prediction = predictor.predict(held_out.images[:1], top_k=3).predictions[0]
    assert 0 < sum(prediction.scores) <= 1.0 + 1e-5  # the softmax applied on the host


def test_metadata_round_trip(exported, trained_model_path) -> None:
    from resnet_edge.artifact import read_metadata
    from resnet_edge.models.io import read_keras
    from resnet_edge.predictor import load

    source = read_keras(trained_model_path)
    for name, (path, metadata) in exported.items():
        assert read_openvino(path) == metadata == read_metadata(path)
        assert metadata.extra["weights_bytes"] == path.with_suffix(".bin").stat().st_size
        assert metadata.labels == source.labels and metadata.input_shape == source.input_shape
        assert metadata.source_sha256 is not None
        if name in ("f32", "bf16"):
            assert metadata.format == "openvino" and metadata.output_activation == "softmax"
            assert metadata.precision == {"f32": "fp32", "bf16": "bf16"}[name]
            assert metadata.extra["inference_precision"] == name
        with load(path, threads=1) as predictor:  # the registry opens an .xml with this backend
            assert predictor.backend.name == "openvino" and predictor.metadata == metadata


def test_write_openvino_replaces_the_metadata_in_place(exported, tmp_path) -> None:
    path = _copy_ir(exported["f32"][0], tmp_path)
    changed = read_openvino(path).replace(labels=tuple(f"class {i}" for i in range(10)))
    write_openvino(path, changed)
    assert read_openvino(path) == changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.bin", "copy.xml"]  # no temporary left
    with Predictor(OpenVINOBackend(path, "cpu", threads=1)) as predictor:
        assert predictor.labels[3] == "class 3"


def test_ir_without_metadata_reads_none_and_runs_at_f32(exported, tmp_path) -> None:
    import openvino as ov

    model = ov.Core().read_model(exported["f32"][0])
    bare = ov.Model(model.get_results(), model.get_parameters(), "bare")
    path = tmp_path / "bare.xml"
    ov.save_model(bare, path, compress_to_fp16=False)
    assert read_openvino(path) is None
    backend = OpenVINOBackend(path, "cpu", threads=1)
    assert backend.metadata is None and backend.inference_precision == "f32"


def test_any_batch_size_and_stable_outputs(exported, held_out) -> None:
    path, _ = exported["nncf"]
    with Predictor(OpenVINOBackend(path, "cpu", threads=2)) as predictor:
        spec = predictor.input_spec
        assert (spec.height, spec.width, spec.channels, spec.dtype) == (32, 32, 3, "float32")
        full = predictor(held_out.images[:7])
        for size in (1, 3, 7, 2):
            assert np.allclose(predictor(held_out.images[:size]), full[:size], atol=1e-5)
        first = predictor.run(held_out.images[:2])
        second = predictor.run(held_out.images[2:4])
        assert not np.array_equal(first[0], second[0])  # returned arrays are not reused by the next call
        assert predictor.backend.output_names and len(first) == len(predictor.backend.output_names)


def test_native_is_the_compiled_model(exported, held_out) -> None:
    import openvino as ov

    backend = OpenVINOBackend(exported["f32"][0], "cpu", threads=1)
    compiled = backend.native()
    assert isinstance(compiled, ov.CompiledModel)
    assert np.allclose(compiled(held_out.images[:2].astype(np.float32))[0], backend.run(
        held_out.images[:2].astype(np.float32))[0])


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no BF16 support in OpenVINO")
def test_bf16_runs_in_bf16(exported, held_out, keras_outputs) -> None:
    path, metadata = exported["bf16"]
    with Predictor(OpenVINOBackend(path, "cpu", threads=2)) as predictor:
        assert predictor.backend.inference_precision == "bf16"
        scores = predictor(held_out.images)
    agreement = float((scores.argmax(1) == keras_outputs.argmax(1)).mean())
    assert agreement >= MIN_TOP1["bf16"], agreement
    assert metadata.precision == "bf16"


def test_bf16_on_a_cpu_without_it_is_a_device_error(exported, monkeypatch) -> None:
    import resnet_edge.backends.openvino.backend as backend_module

    monkeypatch.setattr(backend_module, "cpu_capabilities", lambda core=None: ("FP32", "INT8"))
    with pytest.raises(DeviceError, match="bf16") as error:
        OpenVINOBackend(exported["bf16"][0], "cpu")
    assert "\n" not in str(error.value)
    OpenVINOBackend(exported["f32"][0], "cpu", threads=1)  # f32 needs nothing more


def test_unknown_options_are_refused(trained_model_path, calibration_set, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="precision"):
        export_openvino(trained_model_path, "openvino", tmp_path / "m.xml", inference_precision="f16x")
    with pytest.raises(InvalidArgumentError, match="method"):
        export_openvino(trained_model_path, "openvino-int8", tmp_path / "m.xml", calibration_set, method="pot")
    assert not list(tmp_path.iterdir())


def test_corrupt_xml_is_a_model_file_error(exported, tmp_path) -> None:
    path = _copy_ir(exported["f32"][0], tmp_path)
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="not an OpenVINO IR") as error:
        OpenVINOBackend(path, "cpu")
    assert "\n" not in str(error.value)
    with pytest.raises(ModelFileError, match="not an OpenVINO IR"):
        read_openvino(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(ModelFileError):
        OpenVINOBackend(path, "cpu")


def test_missing_bin_is_a_model_file_error(exported, tmp_path) -> None:
    path = _copy_ir(exported["f32"][0], tmp_path)
    path.with_suffix(".bin").unlink()
    with pytest.raises(ModelFileError, match=r"copy\.bin is missing") as error:
        OpenVINOBackend(path, "cpu")
    assert "\n" not in str(error.value)


def test_mismatching_bin_is_a_model_file_error(exported, tmp_path) -> None:
    path = _copy_ir(exported["f32"][0], tmp_path)
    shutil.copy(exported["nncf"][0].with_suffix(".bin"), path.with_suffix(".bin"))  # a half-replaced pair
    with pytest.raises(ModelFileError, match="weights file does not match") as error:
        OpenVINOBackend(path, "cpu")
    assert "\n" not in str(error.value)


def test_onnx_runs_on_openvino_like_onnxruntime(trained_model_path, held_out, tmp_path) -> None:
    from resnet_edge.backends.onnxruntime.backend import OnnxRuntimeBackend
    from resnet_edge.predictor import load

    path = tmp_path / "model.onnx"
    result = export(trained_model_path, "onnx", path, verify=False)
    assert load(path, device="cpu", backend="openvino").backend.name == "openvino"  # asked for by name
    images = held_out.images[:64]
    with Predictor(OpenVINOBackend(path, "cpu", threads=2)) as openvino, \
            Predictor(OnnxRuntimeBackend(path, "cpu", threads=2)) as onnxruntime:
        assert openvino.metadata == result.metadata  # read from the ONNX metadata_props
        assert openvino.backend.inference_precision == "f32"
        assert openvino.input_spec == onnxruntime.input_spec
        np.testing.assert_allclose(openvino(images), onnxruntime(images), atol=1e-4)
        assert openvino.predict(images[:4], top_k=1).predictions[0].labels == \
            onnxruntime.predict(images[:4], top_k=1).predictions[0].labels


def test_garbage_onnx_is_a_model_file_error(tmp_path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(ModelFileError, match="OpenVINO cannot read it") as error:
        OpenVINOBackend(path, "cpu")
    assert "\n" not in str(error.value)


def _has_int8_weights(conv) -> bool:
    """Whether a Convolution's weights reach it from an int8 constant (or a FakeQuantize) a few nodes up."""
    nodes = [conv.input_value(1).get_node()]
    for _ in range(6):
        if any(n.get_type_name() == "FakeQuantize" or (n.get_type_name() == "Constant" and
                                                        n.get_element_type().get_type_name() in ("i8", "u8"))
               for n in nodes):
            return True
        nodes = [n.input_value(i).get_node() for n in nodes for i in range(n.get_input_size())]
    return False


def test_nncf_keeps_float_layers_in_float(exported, trained_model_path, calibration_set, tmp_path) -> None:
    import openvino as ov

    def float_convs(path: Path) -> list[str]:
        convs = [op for op in ov.Core().read_model(path).get_ops() if op.get_type_name() == "Convolution"]
        return [op.get_friendly_name() for op in convs if not _has_int8_weights(op)]

    assert float_convs(exported["nncf"][0]) == []
    path = tmp_path / "float_layers.xml"
    result = export_openvino(trained_model_path, "openvino-int8", path, calibration_set, method="nncf",
                             float_layers=("conv2_block1_1_conv",))
    assert result.metadata.extra["float_layers"] == ["conv2_block1_1_conv"]
    assert len(float_convs(path)) == 1
    with pytest.raises(InvalidArgumentError, match="has no layer 'no_such_layer'"):
        export_openvino(trained_model_path, "openvino-int8", tmp_path / "none.xml", calibration_set, method="nncf",
                        float_layers=("no_such_layer",))
