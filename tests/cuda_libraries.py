"""The CUDA library a test runs on: the real one on a GPU (skipped without one), or the host
emulator of the same kernels (skipped where no C++ compiler builds it)."""
import pytest

from gpu_backend import cuda


def gpu_library():
    ok, why = cuda.cuda_status()
    if not ok:
        pytest.skip(f"no usable CUDA device: {why}")
    return cuda.cuda_library()


def emulated_library():
    try:
        return cuda.emulated_library()
    except cuda.CudaUnavailable as err:
        pytest.skip(str(err))


def library_for(param: str):
    """`gpu` or `emulator`, as the `dev` fixtures parametrise them."""
    return gpu_library() if param == "gpu" else emulated_library()


def library_and_table(param: str):
    """(library, its CUDA kernel table) for a `dev` fixture's `gpu` or `emulator` parameter."""
    lib = library_for(param)
    return lib, cuda.cuda_kernel_table(lib=lib)
