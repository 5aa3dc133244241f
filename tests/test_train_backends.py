"""Backend resolution: numpy is the reference table; cpu/cuda come from gpu_backend.backends or fail
loudly; auto takes the first usable of cuda, cpu, numpy and says which."""
import types

import pytest

from nitisim.errors import UserInputError
from nitisim.reference import REFERENCE_KERNELS
from nitisim.train.backends import resolve_backend


def _fake_backends(monkeypatch, usable: dict[str, object]):
    """Install a stand-in gpu_backend.backends whose kernel_table serves `usable` and fails otherwise."""
    def kernel_table(name):
        if name not in usable:
            raise OSError(f"lib{name} not built")
        return usable[name]

    module = types.ModuleType("gpu_backend.backends")
    module.kernel_table = kernel_table
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
