"""The registries are the one source of truth: every row resolves, and the rest of the code follows them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from resnet_edge import artifact, registry
from resnet_edge.atomic import atomic_path
from resnet_edge.errors import InvalidArgumentError, ModelFileError
from resnet_edge.predictor import Backend
from resnet_edge.registry import BACKENDS, FORMATS, load_target


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_row_resolves(name: str) -> None:
    row = BACKENDS[name]
    cls = load_target(row.target)
    assert issubclass(cls, Backend) and cls.name == name
    assert set(row.devices) <= set(registry.devices()) - {"auto"}
    assert all(s.startswith(".") for s in (*row.suffixes, *row.also_runs, *row.companions))
    for target in (row.container.read, row.container.write, *([row.intermediates] if row.intermediates else [])):
        assert callable(load_target(target))


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_row_resolves(name: str) -> None:
    fmt = FORMATS[name]
    assert callable(load_target(fmt.target))
    assert fmt.backend in BACKENDS and fmt.suffix in BACKENDS[fmt.backend].suffixes
    assert fmt.resolve_options({}) == fmt.defaults
    for option in fmt.options.values():
        assert option.check(option.default) == option.default or option.default is None
        assert option.help.endswith(".")


def test_suffixes_belong_to_one_backend() -> None:
    suffixes = [s for row in BACKENDS.values() for s in row.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert registry.backend_for_file("m.XML").name == "openvino"
    with pytest.raises(ModelFileError, match=r"unknown model suffix '\.pt'.*\.engine"):
        registry.backend_for_file("model.pt")


def test_options_are_checked_by_their_row() -> None:
    assert FORMATS["onnx-int8"].resolve_options({"float_layers": "a, b", "opset": "13"})["float_layers"] == ("a", "b")
    with pytest.raises(InvalidArgumentError, match="--scheme must be one of u8s8, s8s8"):
        FORMATS["onnx-int8"].resolve_options({"scheme": "trt"})
    with pytest.raises(InvalidArgumentError, match="--io does not apply to onnx"):
        FORMATS["onnx"].resolve_options({"io": "uint8"})
    with pytest.raises(InvalidArgumentError, match="--workspace takes a int"):
        FORMATS["trt"].resolve_options({"workspace": "lots"})


def test_export_flags_and_help_come_from_the_rows() -> None:
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "export", "--help"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    for fmt in FORMATS.values():
        assert fmt.name in result.stdout
        for option in fmt.options.values():
            assert option.flag in result.stdout


@pytest.mark.parametrize("name", ["keras", *FORMATS])
def test_metadata_round_trips_through_every_container(name, artifacts, trained_model_path, tmp_path) -> None:
    source = trained_model_path if name == "keras" else artifacts.get(name)
    if source is None:
        pytest.skip(f"{name} does not run on this machine")
    copy = tmp_path / source.name
    for path in (source, *registry.companions_of(source)):
        shutil.copyfile(path, tmp_path / path.name)
    metadata = artifact.read_metadata(copy)
    relabelled = metadata.replace(labels=tuple(f"class {i}" for i in range(10)))
    artifact.write_metadata(copy, relabelled)
    assert artifact.read_metadata(copy) == relabelled
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_companions_move_with_the_main_file_or_not_at_all(tmp_path) -> None:
    target = tmp_path / "model.xml"
    with pytest.raises(RuntimeError), atomic_path(target, [".bin"]) as tmp:
        tmp.write_text("xml")
        tmp.with_suffix(".bin").write_bytes(b"weights")
        raise RuntimeError("converter failed after writing both files")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target, [".bin"]) as tmp:
        tmp.write_text("xml")
        tmp.with_suffix(".bin").write_bytes(b"weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]
    assert target.with_suffix(".bin").read_bytes() == b"weights"
