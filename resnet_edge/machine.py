"""Facts about this machine that several parts ask: is it an NVIDIA Jetson, what can its CPU compute in."""

from __future__ import annotations

import os
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
JETSON_MODEL_MARK = "NVIDIA Jetson"


def is_jetson(
    release: str | os.PathLike[str] = TEGRA_RELEASE, model: str | os.PathLike[str] = DEVICE_TREE_MODEL
) -> bool:
    """True on L4T (``/etc/nv_tegra_release`` exists) or when the device-tree model names a Jetson."""
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
