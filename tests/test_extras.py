"""The install extras resolve as the README says, on the machines they are for: pip's own resolver is run for a
target platform and Python without installing anything (``pip install --dry-run --report``), with the extras read
from pyproject.toml. Needs the package registry (pip's ordinary configuration); skipped with the reason when it
cannot be reached."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
AARCH64 = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")  # JetPack 6: glibc 2.35
X86_64 = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
JETPACK_PYTHON = {"jetpack6": "3.10", "jetpack7": "3.12"}  # Ubuntu 22.04 and 24.04, as JetPack 6 and 7 ship them
UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
               "Network is unreachable", "Connection refused", "ConnectTimeout", "ReadTimeout", "No route to host")
TIMEOUT = 600


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def extra(name: str) -> list[str]:
    return project()["optional-dependencies"][name]


def resolve(requirements: list[str], platforms: tuple[str, ...], python: str, tmp_path: Path) -> dict[str, dict]:
    """What pip would install for ``requirements`` on that platform and Python: {name: {version, requires, url}}."""
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--disable-pip-version-check", "--only-binary=:all:", "--python-version", python,
               "--target", str(tmp_path / "target"), "--report", str(report),
               *(f"--platform={platform}" for platform in platforms), *requirements]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip did not resolve within {TIMEOUT} s (package registry slow or out of reach)")
    if done.returncode != 0:
        text = done.stderr + done.stdout
        if any(mark in text for mark in UNREACHABLE):
            pytest.skip(f"package registry out of reach: {text.strip().splitlines()[-1]}")
        pytest.fail(f"pip cannot resolve {requirements} for {platforms[0]} / Python {python}:\n{text[-2000:]}")
    installs = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower():
            {"version": item["metadata"]["version"], "requires": item["metadata"].get("requires_dist") or [],
             "url": item["download_info"]["url"]} for item in installs}


def major(version: str) -> int:
    return int(version.split(".")[0])


# the extras as written ------------------------------------------------------------------------------

def test_jetson_extras_name_no_tensorrt_and_one_cuda():
    for name in JETPACK_PYTHON:
        requirements = extra(name)
        assert not [r for r in requirements if r.lower().startswith(("tensorrt", "nvidia-", "onnxruntime-gpu"))], \
            f"{name} would shadow JetPack's own TensorRT/CUDA: {requirements}"
        assert any(r.startswith("cuda-python") for r in requirements)


def test_each_tensorrt_extra_pairs_tensorrt_and_cuda_python_of_one_cuda_major():
    for name, cuda in (("tensorrt", 13), ("tensorrt-cu12", 12)):
        requirements = extra(name)
        assert any(r.startswith(f"tensorrt-cu{cuda}") for r in requirements), requirements
        pin = next(r for r in requirements if r.startswith("cuda-python"))
        assert f">={cuda}" in pin and f"<{cuda + 1}" in pin, pin


# resolved for the machines they are for -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("name", "cuda"), [("jetpack6", "12.6."), ("jetpack7", "13.")])
def test_jetson_install_resolves_for_aarch64_with_jetpacks_cuda_and_no_tensorrt(name, cuda, tmp_path):
    """``pip install 'resnet-edge[jetpackN]'`` on a Jetson: the base package and the cuda-python of JetPack's CUDA,
    every wheel built for aarch64, and no TensorRT or CUDA library that would shadow the system's."""
    resolved = resolve([*project()["dependencies"], *extra(name)], AARCH64, JETPACK_PYTHON[name], tmp_path)
    assert resolved["cuda-python"]["version"].startswith(cuda), resolved["cuda-python"]
    if "cuda-bindings" in resolved:
        assert resolved["cuda-bindings"]["version"].startswith(cuda), resolved["cuda-bindings"]
    shadowing = sorted(n for n in resolved if n.startswith(("tensorrt", "nvidia-")) or n == "onnxruntime-gpu")
    assert shadowing == []
    platform_wheels = [item["url"] for item in resolved.values() if not item["url"].endswith("-none-any.whl")]
    assert platform_wheels and all("aarch64" in url for url in platform_wheels), platform_wheels


@pytest.mark.slow
def test_exporting_on_a_jetson_resolves_for_aarch64(tmp_path):
    """``resnet-edge[export,jetpack6]``: TensorFlow and the ONNX route have aarch64 wheels for JetPack 6's Python."""
    resolved = resolve([*project()["dependencies"], *extra("export"), *extra("jetpack6")], AARCH64, "3.10", tmp_path)
    assert {"tensorflow", "tf2onnx", "onnx", "onnxruntime", "cuda-python"} <= set(resolved)
    assert not [n for n in resolved if n.startswith("tensorrt")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "cuda"), [("tensorrt", 13), ("tensorrt-cu12", 12)])
def test_desktop_cuda_python_pin_resolves_to_its_cuda_major(name, cuda, tmp_path):
    """The cuda-python half of each desktop TensorRT extra (the TensorRT half is an sdist pip builds at install)."""
    pin = [r for r in extra(name) if r.startswith("cuda-python")]
    resolved = resolve(pin, X86_64, "3.11", tmp_path)
    assert major(resolved["cuda-python"]["version"]) == cuda


@pytest.mark.slow
@pytest.mark.parametrize(("name", "cuda"), [("gpu", 13), ("gpu-cu12", 12)])
def test_gpu_extras_resolve_to_onnxruntime_gpu_for_their_cuda(name, cuda, tmp_path):
    """``gpu``: an onnxruntime-gpu whose CUDA libraries are CUDA 13's (1.27+); ``gpu-cu12``: the last CUDA 12 one."""
    resolved = resolve(extra(name), X86_64, "3.11", tmp_path)
    wheel = resolved["onnxruntime-gpu"]
    runtime = [r for r in wheel["requires"] if "cuda-runtime" in r and 'extra == "cuda"' in r]
    assert runtime and all(f"~={cuda}." in r for r in runtime), (wheel["version"], runtime)
    if cuda == 12:
        assert tuple(map(int, wheel["version"].split(".")[:2])) < (1, 27)
