"""Per-node timing for the CUDA backend: `DeviceNodeClock`, nitisim.contract.executor's NodeClock on the stream.

The kernels return at launch, so host laps would time the launches, not the work; this clock
records an event on the stream after each node instead and reads the times back once at the end.
"""
from __future__ import annotations

from .cuda_device import CudaLib
from .cuda_loading import cuda_library


class DeviceNodeClock:
    """nitisim.contract.executor.NodeClock on the stream: an event recorded after each node, so a node's time
    is the stream time between its mark and the previous one (its kernels, plus any wait for the host
    to queue them), not the microseconds its asynchronous launch took on the host."""

    def __init__(self, lib: CudaLib):
        self.lib = lib
        self._laps = 0

    def start(self, nodes: int) -> None:
        self.lib.marks_begin(nodes)
        self._laps = 0

    def lap(self) -> None:
        self.lib.mark()
        self._laps += 1

    def read(self) -> list[float]:
        laps, self._laps = self._laps, 0
        return [ms * 1e-3 for ms in self.lib.marks_read(laps).tolist()]


def device_node_clock(device: int = 0, lib: CudaLib | None = None) -> DeviceNodeClock:
    """The node clock of the CUDA backend (on the library its kernel table uses)."""
    return DeviceNodeClock(lib or cuda_library(device))
