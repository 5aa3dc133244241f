"""benchmarks/kernels.py runs on every engine mix this machine can stand in for.

$NITISIM_CPU_ENGINE forces the default engine, so one machine plays a VNNI-only or an AVX2-only
CPU (an AMX machine's mix, amx + avx512vnni on the native build, needs AMX and skips here, saying
so). The script runs whole at a tiny size: the built-in models it measures are swapped for tiny
ones and `race` calls each contender once with a placeholder time, so nothing is timed; what is
checked is that every contender ran on the engine it claims, and the tables name them.
"""
import pytest

from benchmark_scripts import load_benchmark
from gpu_backend.lib import ENGINE_ENV, available_engines, cpu_library
from nitisim.contract.models import Conv, Flatten, Linear, MaxPool, ModelSpec, ReLU, builtin_models

TINY = {
    "vgg-small-7": ModelSpec("vgg-small-7", (8, 8, 3), (Conv(8, 3, 1, 1), ReLU(), MaxPool(2, 2), Conv(16, 3, 1, 1),
                                                        ReLU(), Flatten(), Linear(10))),
    "lenet": ModelSpec("lenet", (8, 8, 1), (Conv(4, 3), ReLU(), Flatten(), Linear(10))),
    "mlp": ModelSpec("mlp", (4, 4, 1), (Flatten(), Linear(8), ReLU(), Linear(10))),
    # a residual net: adds, fan-in error sums and the global pool run in the int8 step and the twin
    "resnet-20": builtin_models()["resnet-20-28"],
}
TINY_CONVS = sum(isinstance(layer, Conv) for layer in TINY["vgg-small-7"].layers)
BELOW = {"amx": "avx512vnni", "avx512vnni": "avx2", "avx2": "scalar", "scalar": None}


def _simd_engines():
    return [e for e in available_engines() if e != "amx"]


@pytest.fixture
def kernels(monkeypatch):
    """The script with tiny models and a `race` that runs each contender once and records its engine."""
    module = load_benchmark("kernels")
    ran, mix = [], {}
    engine_mix = module.engine_mix

    def recorded_mix():
        mix.update(engine_mix())
        return dict(mix)

    def race_once(contenders, repeats, rounds=3):
        for name, fn in contenders.items():
            fn()
            if name in mix:  # an engine's contender left its library on that engine
                assert mix[name].engine == name
            ran.append(name)
        return dict.fromkeys(contenders, 1.0)  # a placeholder: the test asserts nothing about speed

    monkeypatch.setattr(module, "engine_mix", recorded_mix)
    monkeypatch.setattr(module, "race", race_once)
    monkeypatch.setattr(module, "builtin_models", lambda: dict(TINY))
    return module, ran


@pytest.mark.parametrize("engine", ["avx512vnni", "avx2", "scalar"])
def test_script_runs_with_the_default_engine_forced(kernels, monkeypatch, capsys, engine):
    if engine not in _simd_engines():
        pytest.skip(f"this CPU lacks the {engine} instructions")
    module, ran = kernels
    monkeypatch.setenv(ENGINE_ENV, engine)
    libs = module.engine_mix()
    below = BELOW[engine]
    assert list(libs) == [engine, below] if below else [engine]
    for name, lib in libs.items():  # each engine on a build that holds it
        lib.set_engine(name)
        assert lib.engine == name
    assert module.main(["--quick", "--no-write"]) == 0
    out = capsys.readouterr().out
    for name in libs:
        assert f"C backend int8, `{name}` engine" in out
        assert ran.count(name) == 2 * TINY_CONVS + 4  # a GEMM and a conv race per layer, four training tables
    assert "**resnet-20, batch 4**" in out and "resnet-20 training" in out
    assert f"default `{engine}` forced by ${ENGINE_ENV}" in out
    assert "AMX stride-1 conv paths" not in out  # only on an AMX engine
    if below is None:
        assert "no engine below it to race" in out


def test_default_mix_without_the_variable(kernels, monkeypatch):
    """Unforced, the default is the best engine here and the second one the next below it."""
    module, _ = kernels
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    order = available_engines()
    libs = module.engine_mix()
    assert list(libs) == order[:2]
    if order[0] == "amx":  # AMX and the native SIMD engine are one build
        assert libs["amx"] is libs[order[1]] is cpu_library()
    else:
        assert libs[order[0]] is cpu_library() and libs[order[1]] is not cpu_library()
