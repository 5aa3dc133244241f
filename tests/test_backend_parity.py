"""Whole training steps on the C backend equal the numpy reference bit for bit, every tensor."""
import pytest

from nitisim.backends import kernel_table
from gpu_backend.parity import compare_steps, parity_models
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.models import Conv, Flatten, Linear, ModelSpec, ReLU
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.backends import resolve_backend

pytestmark = pytest.mark.cpu_lib

OPTIONS = {
    "niti": NumericsOptions(),
    "stochastic-fine-momentum": NumericsOptions("stochastic", "nearest", "fine", "momentum"),
    "nearest-shadow16": NumericsOptions("nearest", "stochastic", "niti", "shadow16"),
}


@pytest.fixture(scope="module")
def cpu_table():
    return kernel_table("cpu")


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("model_name", sorted(parity_models()))
def test_whole_steps_match_reference(cpu_table, model_name, options):
    graph = build_graph(parity_models()[model_name], 6, options)
    assert compare_steps(graph, REFERENCE_KERNELS, cpu_table, steps=3) == []


def test_strided_padded_convs_and_int64_weight_gradients(cpu_table):
    # stride 2, padding 2, 5x5 kernels; batch 140 with a 31x31 output map makes the first layer's
    # weight-gradient reduction 134,540 > 133,144 products, so its gradient is int64.
    model = ModelSpec("strided", (62, 62, 1), (Conv(3, 3, 2, 1), ReLU(), Conv(4, 5, 2, 2), ReLU(), Flatten(), Linear(10)))
    graph = build_graph(model, 140)
    assert graph.tensor("conv1.w.grad").dtype == "int64"
    assert compare_steps(graph, REFERENCE_KERNELS, cpu_table, steps=1) == []


def test_table_covers_every_op(cpu_table):
    assert set(cpu_table) == set(REFERENCE_KERNELS)


def test_training_backend_resolution_reaches_the_c_table():
    table, name = resolve_backend("cpu")
    assert name == "cpu" and set(table) == set(REFERENCE_KERNELS)
    lines = []
    _, auto = resolve_backend("auto", log=lines.append)
    assert auto in ("cpu", "cuda") and len(lines) == 1 and auto in lines[0]
