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
            if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "tensorrt"}:
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
        import resnet_edge, resnet_edge.runtime, resnet_edge.metadata, resnet_edge.preprocess, resnet_edge.artifact
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
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + "\nsys.modules['ai_edge_litert'] = None\nfrom resnet_edge.cli import main\n"
         f"main(['predict', {str(model)!r}, {str(tmp_path)!r}])"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "resnet-edge[tflite]" in result.stderr
