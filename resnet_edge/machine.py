"""Facts about this machine that several parts ask: is it an NVIDIA Jetson, what can its CPU compute in."""

from __future__ import annotations

import os
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
JETSON_MODEL_MARK = "NVIDIA Jetson"


def is_jetson(release: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None) -> bool:
    """True on L4T (``/etc/nv_tegra_release`` exists) or when the device-tree model names a Jetson."""
    release, model = release or TEGRA_RELEASE, model or DEVICE_TREE_MODEL
    if Path(release).is_file():
        return True
    try:
        text = Path(model).read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return False
    return JETSON_MODEL_MARK in text


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (x86 ``flags``, Arm ``Features``); empty where it does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX-BF16, Armv8.6 BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


# What `resnet-edge doctor` reports about the machine: each function reads one file or runs one command, and
# returns None (or an empty value) where the machine does not say; none of them raises.

NVIDIA_SMI_TIMEOUT_S = 10
CUDA_TOOLKIT_VERSION = Path("/usr/local/cuda/version.json")
PLATFORM_DEVICES = Path("/sys/bus/platform/devices")
# L4T release -> JetPack release, where one L4T maps to one JetPack (NVIDIA's release notes); otherwise by L4T major.
JETPACK_RELEASES = {"36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1"}
JETPACK_BY_L4T_MAJOR = {"35": "5.1.x", "36": "6.x", "38": "7.x"}  # a later major: the nvidia-jetpack package says
# The instruction sets that decide int8 and bf16 speed, by the names /proc/cpuinfo gives them.
ISA_FLAGS = {
    "x86": (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"), ("avx512_vnni", "AVX512-VNNI"),
            ("avx512_bf16", "AVX512-BF16"), ("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"),
            ("avx512_fp16", "AVX512-FP16")),
    "arm": (("asimd", "NEON"), ("asimddp", "NEON dot-product"), ("i8mm", "I8MM"), ("bf16", "BF16"),
            ("asimdhp", "NEON fp16"), ("sve", "SVE"), ("sve2", "SVE2")),
}


def _read(path: str | os.PathLike[str]) -> str | None:
    try:
        return Path(path).read_bytes().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def _run(command: list[str], timeout: float = NVIDIA_SMI_TIMEOUT_S) -> str | None:
    """A command's stdout, or None when it is missing, fails or hangs."""
    import shutil
    import subprocess

    tool = shutil.which(command[0])
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, *command[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's name as the kernel gives it (x86 ``model name``; Arm boards give ``Hardware`` or nothing)."""
    import platform

    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def isa() -> dict[str, bool]:
    """The int8/bf16 instruction sets of this CPU's family: name -> present (VNNI, AMX, AVX512-BF16, NEON dot...)."""
    import platform

    family = "arm" if platform.machine().lower() in ("aarch64", "arm64", "armv8l") else "x86"
    flags = cpu_flags()
    return {name: flag in flags for flag, name in ISA_FLAGS[family]}


def jetson_model(model: str | os.PathLike[str] | None = None) -> str | None:
    """The device-tree model (``NVIDIA Jetson AGX Orin Developer Kit``), or None."""
    return _read(model or DEVICE_TREE_MODEL) or None


def l4t_release(release: str | os.PathLike[str] | None = None) -> str | None:
    """``36.4.3`` from ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.3, ...``), or None."""
    import re

    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", _read(release or TEGRA_RELEASE) or "")
    if match is None:
        return None
    revision = match.group(2).rstrip(".")
    return f"{match.group(1)}.{revision}" + (".0" if revision.count(".") == 0 else "")


def dpkg_version(package: str) -> str | None:
    """An installed Debian package's version (``nvidia-l4t-core``, ``nvidia-jetpack``), or None."""
    text = _run(["dpkg-query", "-W", "-f=${Version}", package])
    return text.strip() or None if text else None


def jetpack_release(l4t: str | None, jetpack_package: str | None = None) -> str | None:
    """The JetPack release: the ``nvidia-jetpack`` package's version where installed, else from the L4T release."""
    if jetpack_package:
        return jetpack_package.split("+")[0].split("-")[0]
    if not l4t:
        return None
    return JETPACK_RELEASES.get(l4t) or JETPACK_BY_L4T_MAJOR.get(l4t.split(".")[0])


def dla_cores(devices: str | os.PathLike[str] | None = None) -> int:
    """DLA engines the kernel lists (``*.nvdla0``, ``*.nvdla1``): 2 on AGX Orin and Orin NX 16GB, 0 on Orin Nano
    and Thor. TensorRT's own count (``num_DLA_cores``) is the one an engine build obeys."""
    try:
        return sum(1 for entry in Path(devices or PLATFORM_DEVICES).iterdir() if ".nvdla" in entry.name)
    except OSError:
        return 0


def jetson(release: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None,
           devices: str | os.PathLike[str] | None = None) -> dict[str, object] | None:
    """Model, L4T and JetPack release and DLA cores of a Jetson; None elsewhere."""
    if not is_jetson(release, model):
        return None
    l4t = l4t_release(release)
    core = dpkg_version("nvidia-l4t-core")
    return {"model": jetson_model(model), "l4t": l4t, "l4t_core_package": core,
            "jetpack": jetpack_release(l4t or (core.split("-")[0] if core else None), dpkg_version("nvidia-jetpack")),
            "dla_cores": dla_cores(devices)}


def has_no_dla(model: str | None) -> bool:
    """Jetsons known to have no DLA at all: Thor (its Blackwell GPU replaced it) and the Orin Nano."""
    return bool(model) and any(name in model for name in ("Thor", "Orin Nano"))


def nvidia_gpus() -> dict[str, object]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them (name, compute capability, memory, driver) and the CUDA version the
    driver supports; ``{}`` where there is no driver. The CUDA toolkit under /usr/local/cuda is listed too."""
    import json
    import re

    found: dict[str, object] = {}
    listing = _run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                    "--format=csv,noheader"])
    if listing:
        gpus = []
        for line in listing.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 4:
                gpus.append({"name": parts[0], "compute_capability": parts[1], "memory": parts[2], "driver": parts[3]})
        found["gpus"] = gpus
        header = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]) or "")
        if header:
            found["driver_cuda"] = header.group(1)
    try:
        toolkit = json.loads(CUDA_TOOLKIT_VERSION.read_text())
        found["cuda_toolkit"] = toolkit.get("cuda", {}).get("version")
    except (OSError, ValueError, AttributeError):
        pass
    return found
