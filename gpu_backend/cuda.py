"""The CUDA backend's Python side: libniti_cuda.so, device tensors, and the kernel table.

This module is the public face: it holds no code of its own and re-exports the names of the files
that do, one job each, so `from gpu_backend import cuda` is all a caller needs:

- cuda_binding.py: the binding of csrc/niti_cuda_api.h (cffi in ABI mode through c_binding.Binding,
  as the CPU library's): `API_HEADER`, `bind`, `cdef_text`.
- cuda_device.py: `CudaLib`, the loaded library on one device (status codes, read from the library
  with its other constants, become exceptions;
  device queries, memory, copies, GEMM engine, conv mode, timers), and `DeviceTensor`, the device
  counterpart of nitisim.contract.numerics.QTensor.
- cuda_loading.py: getting a library: `cuda_library()` (nvcc build, load, device init),
  `emulated_library()` (the same sources on the host emulator), `cuda_status()`.
- cuda_kernels.py: `cuda_kernel_table()`, the CUDA REFERENCE_KERNELS, and `to_device` / `to_host`.
- cuda_node_clock.py: `DeviceNodeClock`, per-node times from events on the stream.

Nothing is compiled, loaded or touched on the GPU at import time (cffi is imported only when a
library is bound). `cuda_library()` builds the library on first use, loads it and initialises the
device; when any of that fails it raises `CudaUnavailable`, whose message says what was tried and
how to fix it. `cuda_status()` answers the same question without raising.

    table = cuda_kernel_table()
    result = train_step(graph, table, params, x, labels, ctx)   # params: QTensor or DeviceTensor

runs a whole step on the GPU with no host synchronisation: exponents are computed and consumed on
the device, and memory is allocated and freed in stream order. result.params are DeviceTensors;
`to_host()` turns one back into a QTensor. Data-dependent checks (overflow, bad labels) surface at
the next synchronising call, not at the op that failed. Where there is no GPU,
`cuda_kernel_table(lib=emulated_library())` runs the same kernels on the CPU: slow and exact.
"""
from __future__ import annotations

from .c_binding import Binding
from .cuda_binding import API_HEADER, bind, cdef_text
from .cuda_device import CONV_MODES, CONV_OPS, CONV_PATHS, GEMM_ENGINES, CudaError, CudaLib, DeviceTensor
from .cuda_kernels import CudaOps, cuda_kernel_table, to_device, to_host
from .cuda_loading import (EMULATOR_FLAGS, EMULATOR_LIBRARY, CudaUnavailable, build_emulator, cuda_library,
                           cuda_status, emulated_library)
from .cuda_node_clock import DeviceNodeClock, device_node_clock

__all__ = [
    "API_HEADER", "Binding", "bind", "cdef_text",
    "CONV_MODES", "CONV_OPS", "CONV_PATHS", "GEMM_ENGINES", "CudaError", "CudaLib", "DeviceTensor",
    "CudaOps", "cuda_kernel_table", "to_device", "to_host",
    "EMULATOR_FLAGS", "EMULATOR_LIBRARY", "CudaUnavailable", "build_emulator", "cuda_library", "cuda_status",
    "emulated_library",
    "DeviceNodeClock", "device_node_clock",
]
