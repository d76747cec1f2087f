"""The package and CLI start without heavy runtimes; every command has help."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCK_TF = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "onnx", "tensorrt"}:
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_TF + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_import_does_not_load_tensorflow() -> None:
    result = run_python(
        """
        import resnet_edge, resnet_edge.predictor, resnet_edge.metadata, resnet_edge.preprocess, resnet_edge.artifact
        heavy = [m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "onnxruntime", "tensorrt"}]
        print("heavy:", heavy)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_cli_help_does_not_load_tensorflow() -> None:
    result = run_python(
        """
        from resnet_edge.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert "tensorflow" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr
    assert "export" in result.stdout and "predict" in result.stdout


@pytest.mark.parametrize("command", ["build", "train", "info", "export", "predict", "parity", "benchmark", "optimize"])
def test_every_command_has_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_missing_optional_runtime_is_one_line_error(tmp_path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3" * 10)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + "\nsys.modules['ai_edge_litert'] = None\nfrom resnet_edge.cli import main\n"
         f"main(['predict', {str(model)!r}, {str(tmp_path)!r}])"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "resnet-edge[tflite]" in result.stderr


def test_running_an_artifact_needs_no_converter() -> None:
    """Every runtime's backend and metadata container import with TensorFlow, Keras, tf2onnx and ONNX blocked:
    a deployment machine installs only its runtime."""
    result = run_python(
        """
        import importlib
        from resnet_edge.registry import BACKENDS, REFERENCE
        for row in BACKENDS.values():
            if row.name == REFERENCE:
                continue
            for target in (row.target, row.container.read, row.container.write):
                importlib.import_module(target.split(":")[0])
        heavy = [m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "onnx"}]
        print("heavy:", heavy)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_help_keeps_the_brackets_of_pip_extras() -> None:
    """Rich's markup swallowed '[scale]' from "pip install 'resnet-edge[scale]'" in --ray's help."""
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "predict", "--help"], capture_output=True,
                            text=True, timeout=60, env={**__import__("os").environ, "COLUMNS": "250"})
    assert "pip install 'resnet-edge[scale]'" in result.stdout


def test_the_package_level_names_are_the_functions() -> None:
    """``from resnet_edge import export`` is the function, even once the modules are imported."""
    result = run_python(
        """
        import resnet_edge.exporter, resnet_edge.predictor
        from resnet_edge import export, export_formats, load
        print(callable(export), callable(export_formats), callable(load))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "True True True" in result.stdout
