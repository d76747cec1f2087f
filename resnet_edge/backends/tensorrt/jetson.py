"""Device "jetson" of the TensorRT backend: DLA engines on their DLA core, zero-copy buffers on the integrated GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DeviceError
from ...machine import DEVICE_TREE_MODEL, JETSON_MODEL_MARK, TEGRA_RELEASE, is_jetson
from .backend import TensorRTBackend
from .compat import engine_info
from .cuda import HostDeviceBuffer, allocate_mapped


class JetsonBackend(TensorRTBackend):
    """The TensorRT backend on device "jetson": honours an engine's DLA core and skips host/device copies on
    integrated GPUs. The registry row's ``device_classes`` names it for "jetson"; still the ``tensorrt`` backend."""

    name = "tensorrt"
    devices = ("jetson",)

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        if not is_jetson():
            raise DeviceError(
                f"{Path(path).name}: this machine is not a Jetson (no {TEGRA_RELEASE}, and {DEVICE_TREE_MODEL} "
                f"does not name an {JETSON_MODEL_MARK}); load it with device='cuda'"
            )
        super().__init__(path, device, threads)

    def _configure_runtime(self, runtime: Any) -> None:
        """Select the DLA core the engine was built for before it is deserialized."""
        dla_core = engine_info(self.metadata).get("dla_core")
        if dla_core is None:
            return
        available = int(runtime.num_DLA_cores)
        if not 0 <= int(dla_core) < available:
            raise DeviceError(
                f"{self.path.name} was built for DLA core {dla_core}, this Jetson has "
                f"{available} DLA core(s)"
            )
        runtime.DLA_core = int(dla_core)

    def _allocate(self, nbytes: int) -> HostDeviceBuffer:
        """Pinned host memory mapped into the GPU's address space, so no memcpy is needed.

        Only an integrated GPU (sharing DRAM with the CPU) gains from it; elsewhere the copying
        allocation of TensorRTBackend is used.
        """
        if not self.gpu.integrated:
            return super()._allocate(nbytes)
        return allocate_mapped(self._rt, nbytes)
