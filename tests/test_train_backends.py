"""Backend resolution (nitisim/backends.py): numpy is the reference table; cpu/cuda come from
gpu_backend.backends' table constructors or fail loudly; auto takes the first usable of cuda, cpu, numpy and says which."""
import types

import pytest

from nitisim.contract.errors import UserInputError
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.backends import resolve_backend


def _fake_backends(monkeypatch, usable: dict[str, object]):
    """Install a stand-in gpu_backend.backends whose table constructors serve `usable` and fail otherwise."""
    def constructor(name):
        def build():
            if name not in usable:
                raise OSError(f"lib{name} not built")
            return usable[name]
        return build

    module = types.ModuleType("gpu_backend.backends")
    module.cpu_kernel_table, module.cuda_kernel_table = constructor("cpu"), constructor("cuda")
    monkeypatch.setitem(__import__("sys").modules, "gpu_backend.backends", module)


def test_numpy_is_the_reference():
    table, name = resolve_backend("numpy")
    assert table is REFERENCE_KERNELS and name == "numpy"


def test_explicit_backend_failure_is_an_error_not_numpy(monkeypatch):
    _fake_backends(monkeypatch, {})
    for name in ("cpu", "cuda"):
        with pytest.raises(UserInputError) as err:
            resolve_backend(name)
        assert err.value.source == "--backend" and "not built" in str(err.value)


def test_explicit_backend_loads(monkeypatch):
    table = {"linear": object()}
    _fake_backends(monkeypatch, {"cpu": table})
    assert resolve_backend("cpu") == (table, "cpu")


@pytest.mark.parametrize("usable,expected", [({}, "numpy"), ({"cpu": {"x": 1}}, "cpu"),
                                             ({"cpu": {"x": 1}, "cuda": {"y": 2}}, "cuda")])
def test_auto_prefers_cuda_then_cpu_then_numpy_and_says_so(monkeypatch, usable, expected):
    _fake_backends(monkeypatch, usable)
    lines = []
    _, name = resolve_backend("auto", log=lines.append)
    assert name == expected
    assert len(lines) == 1 and f"auto -> {expected}" in lines[0]
    if expected != "cuda":
        assert "cuda: OSError: libcuda not built" in lines[0]


def test_unknown_backend():
    with pytest.raises(UserInputError):
        resolve_backend("tpu")


def test_empty_table_is_unusable(monkeypatch):
    _fake_backends(monkeypatch, {"cpu": {}})
    with pytest.raises(UserInputError, match="not a kernel table"):
        resolve_backend("cpu")


# ------------------------------------------------------------------------------------ node clocks
def test_host_clock_gives_each_node_its_own_time():
    """The node that sleeps gets the sleep: laps are attributed to the node that ran, in graph order."""
    import time

    import numpy as np

    from nitisim.contract.executor import HostNodeClock, StepContext, train_step
    from nitisim.contract.graph import NumericsOptions, build_graph
    from nitisim.contract.init import init_params
    from nitisim.contract.models import builtin_models
    from nitisim.contract.numerics import QTensor

    graph = build_graph(builtin_models()["mlp"], 4, NumericsOptions())
    slow = next(n for n in graph.nodes if n.op == "loss_grad")

    def sleepy_loss(node, ctx, *inputs):
        time.sleep(0.05)
        return REFERENCE_KERNELS["loss_grad"](node, ctx, *inputs)

    kernels = {**REFERENCE_KERNELS, "loss_grad": sleepy_loss}
    clock = HostNodeClock()
    x = QTensor(np.ones((4, 28, 28, 1), np.int8), -8)
    train_step(graph, kernels, init_params(graph, 1), x, np.zeros(4, np.int32), StepContext(), clock=clock)
    seconds = dict(zip((n.name for n in graph.nodes), clock.read()))
    assert len(seconds) == len(graph.nodes) and min(seconds.values()) >= 0
    assert seconds[slow.name] >= 0.05
    assert max(s for name, s in seconds.items() if name != slow.name) < 0.05
    assert clock.read() == []  # read once


def test_node_clock_per_backend(monkeypatch):
    from nitisim.contract.executor import HostNodeClock
    from nitisim.backends import node_clock

    assert isinstance(node_clock("numpy"), HostNodeClock) and isinstance(node_clock("cpu"), HostNodeClock)
    fake = types.SimpleNamespace(device_node_clock=lambda: "device clock")
    monkeypatch.setitem(__import__("sys").modules, "gpu_backend.cuda", fake)
    assert node_clock("cuda") == "device clock"  # cuda kernels return at launch: events, not host laps
    with pytest.raises(ValueError):
        node_clock("auto")
