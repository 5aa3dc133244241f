"""ResNets bit for bit: whole training steps of resnet-20 and of a small ResNet with a strided 1x1
shortcut give the same tensors (activations, the fan-in error sums, gradients, updated weights,
every exponent) on the numpy reference, the C library on every engine this machine runs, and the
CUDA kernels on the host emulator (and on a GPU where one is present)."""
import os
import shutil

import pytest

from cuda_libraries import library_for
from gpu_backend.parity import compare_steps, small_resnet
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.models import builtin_models
from nitisim.contract.reference import REFERENCE_KERNELS

HAVE_CC = shutil.which(os.environ.get("CC") or "gcc") is not None
OPTIONS = {
    "niti": NumericsOptions(),
    "stochastic-fine-shadow16": NumericsOptions("stochastic", "stochastic", "fine", "shadow16"),
}


def _graph(model_name: str, options: NumericsOptions):
    model = small_resnet() if model_name == "small-resnet" else builtin_models()[model_name]
    return build_graph(model, 2, options)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler to build the CPU kernel library")
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("model_name", ["resnet-20", "small-resnet"])
def test_c_equals_numpy_on_every_engine(model_name, options):
    from gpu_backend.backends import cpu_kernel_table
    from gpu_backend.lib import available_engines

    graph = _graph(model_name, options)
    assert {"add", "global_avgpool", "global_avgpool_grad"} <= {n.op for n in graph.nodes}
    for engine in available_engines():
        for fused in (True, False):
            table = cpu_kernel_table(engine=engine, fuse_requantize=fused)
            assert compare_steps(graph, REFERENCE_KERNELS, table, steps=2) == [], (engine, fused)


@pytest.mark.parametrize("device", [pytest.param("gpu", marks=pytest.mark.gpu), "emulator"])
@pytest.mark.parametrize("model_name", ["small-resnet", pytest.param("resnet-20", marks=pytest.mark.slow)])
def test_cuda_equals_numpy(device, model_name):
    from gpu_backend import cuda

    lib = library_for(device)
    table = cuda.cuda_kernel_table(lib=lib)
    graph = _graph(model_name, OPTIONS["stochastic-fine-shadow16"])
    assert compare_steps(graph, REFERENCE_KERNELS, table, steps=2, to_device=lambda t: cuda.to_device(t, lib),
                         to_host=cuda.to_host) == []
