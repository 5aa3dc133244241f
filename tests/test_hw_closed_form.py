"""Exact agreement with SCALE-Sim v2's closed form (spec §2) on stall-free runs.

The GEMM shapes and the closed form are written here from the spec, independently of
hwmodels.lowering and hwmodels.tiling: forward M=B*E*F, K=R*S*C_in, N=K_out; input gradient
M=B*E*F, K=K_out, N=R*S*C_in; weight gradient M=R*S*C_in, K=B*E*F, N=K_out (linear: batch m, in k,
out n give (m,k,n), (m,n,k), (k,m,n)).
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from hwmodels.config import CONFIG_DIR, load_accelerator
from hwmodels.sim import simulate
from hwmodels.spec import unbounded_dram, with_buffer_sizes
from hwmodels.tiling import scalesim_cycles
from nitisim.contract.graph import build_graph
from nitisim.contract.models import Conv, Flatten, Linear, MaxPool, ModelSpec, ReLU, resolve_model
from nitisim.contract.models import infer_shapes, layer_inputs, layer_names


def closed_form(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2 Total Cycles, from the spec's table (its '- 1' included)."""
    if dataflow == "os":
        folds, per_fold = math.ceil(m / rows) * math.ceil(n / cols), k + rows + cols - 2
    elif dataflow == "ws":
        folds, per_fold = math.ceil(k / rows) * math.ceil(n / cols), 2 * rows + cols + m - 2
    else:
        folds, per_fold = math.ceil(k / rows) * math.ceil(m / cols), 2 * rows + cols + n - 2
    return folds * per_fold - 1


def spec_gemms(model: ModelSpec, batch: int) -> dict[str, tuple[int, int, int]]:
    """node name -> (M, K, N) for every GEMM of a training step, per the spec's table."""
    shapes = infer_shapes(model, batch)  # shapes[i + 1]: layer i's output; shapes[0]: the input
    sources = layer_inputs(model)  # a residual net's shortcut reads its block input, not the layer before
    names = layer_names(model)
    out = {}
    first_weighted = True
    for i, layer in enumerate(model.layers):
        name = names[i]
        source = shapes[sources[i][0] + 1]
        if isinstance(layer, Conv):
            b, e, f, k_out = shapes[i + 1]
            c_in = source[3]
            rsc = layer.kernel * layer.kernel * c_in
            gemms = {"fwd": (b * e * f, rsc, k_out), "in_grad": (b * e * f, k_out, rsc), "w_grad": (rsc, b * e * f, k_out)}
        elif isinstance(layer, Linear):
            m, k, n = batch, source[1], layer.out_features
            gemms = {"fwd": (m, k, n), "in_grad": (m, n, k), "w_grad": (k, m, n)}
        else:
            continue
        if first_weighted:
            del gemms["in_grad"]  # nothing below the first layer needs an error
            first_weighted = False
        out.update({f"{name}.{g}": mkn for g, mkn in gemms.items()})
    return out


STRIDED = ModelSpec("strided", (17, 17, 5), (
    Conv(8, 3, stride=2, padding=1), ReLU(), Conv(12, 1), ReLU(), MaxPool(2, 2), Flatten(), Linear(10)))

CASES = [(resolve_model("lenet"), 2), (resolve_model("mlp"), 3), (STRIDED, 3)]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_compat_equals_scalesim_on_every_gemm_of_resnet18(dataflow):
    """Every GEMM of a ResNet-18 training step (stem, basic blocks, the strided 1x1 shortcuts, the
    classifier; batch 2) takes SCALE-Sim's closed-form cycles under --compat scalesim."""
    model, batch = resolve_model("resnet-18"), 2
    expected = {name: closed_form(dataflow, 32, 32, *mkn) for name, mkn in spec_gemms(model, batch).items()}
    assert len(expected) == 3 * 21 - 1  # 20 convs and the linear layer; the stem needs no input gradient
    result = simulate(unbounded_dram(arch_for(dataflow, 32, 32)), build_graph(model, batch), compat="scalesim")
    assert {n.name: n.compute_cycles for n in result.nodes if n.kind == "gemm"} == expected
ARRAYS = [(32, 32), (8, 12)]  # a non-square array catches rows/cols mix-ups


def arch_for(dataflow: str, rows: int, cols: int):
    base = load_accelerator(CONFIG_DIR / "array-32x32.yaml")
    return replace(base, array=replace(base.array, rows=rows, cols=cols, dataflow=dataflow))


def wide_ports(arch):
    """Unbounded DRAM and SRAM ports: nothing but the array can set the pace."""
    arch = unbounded_dram(arch)
    return replace(arch, **{b.name: replace(b, width_bytes=b.size_bytes, banks=1) for b in arch.buffers})


def test_worked_example():
    # 32x32 array, conv 3x3, 34x34x64 input unpadded -> 32x32x64: M=1024, K=576, N=64
    assert closed_form("os", 32, 32, 1024, 576, 64) == 40831
    assert closed_form("ws", 32, 32, 1024, 576, 64) == 40247
    assert closed_form("is", 32, 32, 1024, 576, 64) == 91007
    assert [scalesim_cycles(d, 32, 32, 1024, 576, 64) for d in ("os", "ws", "is")] == [40831, 40247, 91007]


@pytest.mark.parametrize("dataflow,expected", [("os", 40831), ("ws", 40247), ("is", 91007)])
def test_worked_example_simulated(dataflow, expected):
    model = ModelSpec("example", (34, 34, 64), (Conv(64, 3), Flatten(), Linear(10)))
    graph = build_graph(model, 1, training=False)
    result = simulate(wide_ports(arch_for(dataflow, 32, 32)), graph, compat="scalesim", phases="forward")
    conv = result.nodes[0]
    assert conv.name == "conv1.fwd" and conv.compute_cycles == expected
    assert conv.cycles == expected and conv.stall_cycles == 0  # the discrete-event run equals the closed form


@pytest.mark.parametrize("rows,cols", ARRAYS)
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_compat_compute_cycles_equal_scalesim_for_every_layer(dataflow, rows, cols):
    arch = unbounded_dram(arch_for(dataflow, rows, cols))
    for model, batch in CASES:
        expected = {name: closed_form(dataflow, rows, cols, *mkn) for name, mkn in spec_gemms(model, batch).items()}
        result = simulate(arch, build_graph(model, batch), compat="scalesim")
        got = {n.name: n.compute_cycles for n in result.nodes if n.kind == "gemm"}
        assert got == expected, model.name
        # the layer rows carry the same numbers under their phase, plus the requantize that reads the
        # GEMM's int32 output (nitisim.contract.ops: it counts with its GEMM)
        rows_by = {(r.name, r.phase): r.compute_cycles for r in result.layers()}
        requant = {(n.layer, n.phase): n.compute_cycles for n in result.nodes if n.op == "requantize"}
        for name, cycles in expected.items():
            layer, kind = name.split(".")
            phase = {"fwd": "forward", "in_grad": "input_grad", "w_grad": "weight_grad"}[kind]
            assert rows_by[(layer, phase)] == cycles + requant.get((layer, phase), 0)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_stall_free_run_equals_the_closed_form(dataflow):
    arch = wide_ports(arch_for(dataflow, 8, 12))
    model, batch = STRIDED, 3
    expected = {name: closed_form(dataflow, 8, 12, *mkn) for name, mkn in spec_gemms(model, batch).items()}
    result = simulate(arch, build_graph(model, batch), compat="scalesim")
    for n in result.nodes:
        if n.name in expected and n.phase != "input_grad":  # input grads add the col2im tail
            assert n.cycles == n.compute_cycles == expected[n.name], n.name
        elif n.name in expected:
            assert n.cycles >= n.compute_cycles == expected[n.name]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_default_mode_counts_truly(dataflow):
    # With buffers large enough that no streamed dimension is split, each GEMM is the closed form + 1.
    arch = with_buffer_sizes(unbounded_dram(arch_for(dataflow, 8, 12)),
                             ifmap=1 << 30, filter=1 << 30, ofmap=1 << 30)
    for model, batch in CASES:
        expected = {name: closed_form(dataflow, 8, 12, *mkn) + 1 for name, mkn in spec_gemms(model, batch).items()}
        result = simulate(arch, build_graph(model, batch))
        assert {n.name: n.compute_cycles for n in result.nodes if n.kind == "gemm"} == expected


def test_default_mode_never_below_the_closed_form():
    # Tight buffers may split the streamed dimension (each piece re-primes the array): never cheaper.
    arch = load_accelerator(CONFIG_DIR / "edge-16x16.yaml")
    model, batch = resolve_model("lenet"), 8
    result = simulate(arch, build_graph(model, batch))
    gemms = spec_gemms(model, batch)
    for n in result.nodes:
        if n.kind == "gemm":
            assert n.compute_cycles >= closed_form("ws", 16, 16, *gemms[n.name]) + 1


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_sram_access_counts_match_scalesim(dataflow):
    # spec §2 sanity checks, on the worked example (int8 operands: 1 byte; int32 partial sums: 4 bytes):
    # OS ifmap reads M*K*ceil(N/C), filter reads K*N*ceil(M/R); WS filter reads K*N, ofmap writes
    # M*N*ceil(K/R); IS ifmap reads M*K. Buffers large enough that nothing is split.
    m, k, n, r, c = 1024, 576, 64, 32, 32
    model = ModelSpec("example", (34, 34, 64), (Conv(64, 3), Flatten(), Linear(10)))
    arch = with_buffer_sizes(unbounded_dram(arch_for(dataflow, r, c)), ifmap=1 << 26, filter=1 << 26, ofmap=1 << 26)
    conv = simulate(arch, build_graph(model, 1, training=False), phases="forward").nodes[0]
    counts = conv.counts
    if dataflow == "os":
        assert counts["ifmap_read_bytes"] == m * k * math.ceil(n / c)
        assert counts["filter_read_bytes"] == k * n * math.ceil(m / r)
    elif dataflow == "ws":
        assert counts["filter_read_bytes"] == k * n
        assert counts["ofmap_write_bytes"] == 4 * m * n * math.ceil(k / r)  # no DRAM refills to add
    else:
        assert counts["ifmap_read_bytes"] == m * k
