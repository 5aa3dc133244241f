"""Bounds and conservation laws of the accelerator model (spec §5): MAC counts equal the graph's;
cycles are at least max(compute, DRAM bytes / bandwidth); DRAM bytes are at least the compulsory
traffic and never grow when an SRAM grows; energy equals counts x table exactly."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.config import CONFIG_DIR, load_accelerator
from hwmodels.energy import FIXED_DEFAULTS
from hwmodels.sim import simulate
from hwmodels.spec import EnergyEntry, freeze_table, with_buffer_sizes
from hwmodels.tiling import GemmShape, choose_tiling, min_buffer_bytes
from nitisim.contract.graph import NumericsOptions, build_graph, node_macs
from nitisim.contract.models import resolve_model

ARCHS = ("edge-16x16", "array-32x32", "eyeriss-like", "tpu-like-128x128")


def arch(name):
    return load_accelerator(CONFIG_DIR / f"{name}.yaml")


@pytest.fixture(scope="module")
def runs():
    graph = build_graph(resolve_model("lenet"), 4)
    return graph, {name: simulate(arch(name), graph) for name in ARCHS}


def test_mac_counts_equal_the_graph(runs):
    graph, results = runs
    for result in results.values():
        by_name = {n.name: n for n in graph.nodes}
        for n in result.nodes:
            assert n.macs == node_macs(graph, by_name[n.name]), n.name
        assert sum(n.macs for n in result.nodes) == graph.macs() == result.total()["macs"]


@pytest.mark.parametrize("model,batch,rule", [("vgg11", 1, "momentum"), ("mlp", 5, "shadow16")])
def test_mac_counts_on_other_graphs(model, batch, rule):
    graph = build_graph(resolve_model(model), batch, NumericsOptions(update_rule=rule))
    result = simulate(arch("array-32x32"), graph)
    by_name = {n.name: n for n in graph.nodes}
    assert all(n.macs == node_macs(graph, by_name[n.name]) for n in result.nodes)


def test_cycles_bounded_by_compute_and_dram(runs):
    _, results = runs
    for name, result in results.items():
        bw = result.arch.dram.bandwidth_bytes_per_cycle
        for n in result.nodes:
            assert n.cycles >= n.compute_cycles >= 0 and n.stall_cycles == n.cycles - n.compute_cycles
            assert n.cycles * bw >= n.dram_read_bytes + n.dram_write_bytes, (name, n.name)
        t = result.total()
        assert t["cycles"] == result.cycles == sum(n.cycles for n in result.nodes)
        assert t["cycles"] >= max(t["compute_cycles"], (t["dram_read_bytes"] + t["dram_write_bytes"]) / bw)


def test_dram_traffic_at_least_compulsory(runs):
    graph, results = runs
    weights = sum(graph.tensor(w).size for w in graph.weights)  # int8: one byte each
    for result in results.values():
        t = result.total()
        # every weight and the input batch are read at least once; every updated weight is written back
        assert t["dram_read_bytes"] >= weights + graph.tensor("x").size
        assert t["dram_write_bytes"] >= weights
        for n in result.nodes:
            if n.kind == "gemm":  # both operands come from DRAM at least once
                assert n.dram_read_bytes >= n.gemm.a_dram_bytes + n.gemm.b_dram_bytes


def test_buffers_never_overfill(runs):
    _, results = runs
    for result in results.values():
        for buf in result.arch.buffers:
            assert 0 < result.buffer_peak_bytes[buf.name] <= buf.size_bytes, (result.arch.name, buf.name)


# -- DRAM bytes never grow when an SRAM grows ------------------------------------------------------
def _tiny_arch(dataflow, rows, cols):
    base = arch("array-32x32")
    return replace(base, array=replace(base.array, rows=rows, cols=cols, dataflow=dataflow))


def _min_bytes(a, name):
    return min_buffer_bytes(a.array.dataflow, a.array.rows, a.array.cols, 4)[name][0] * 2


@settings(max_examples=100, deadline=None)
@given(
    dataflow=st.sampled_from(["ws", "os", "is"]),
    rows=st.sampled_from([4, 8, 16]), cols=st.sampled_from([4, 8, 16]),
    m=st.integers(1, 3000), k=st.integers(1, 3000), n=st.integers(1, 600),
    a_b=st.sampled_from([1, 4]), c_b=st.sampled_from([4, 8]), dedup=st.sampled_from([1, 9]),
    scale=st.tuples(*[st.integers(0, 40)] * 3), grow=st.tuples(*[st.integers(0, 40)] * 3),
)
def test_tiling_dram_bytes_never_grow_with_sram(dataflow, rows, cols, m, k, n, a_b, c_b, dedup, scale, grow):
    a = _tiny_arch(dataflow, rows, cols)
    g = GemmShape(m, k, n, a_b, a_b, c_b, max(1, m * k * a_b // dedup), k * n * a_b, m * n * c_b)
    names = ("ifmap", "filter", "ofmap")
    small = {b: _min_bytes(a, b) * (1 + s) ** 2 for b, s in zip(names, scale)}
    large = {b: small[b] + _min_bytes(a, b) * d * d for b, d in zip(names, grow)}
    t_small = choose_tiling(g, with_buffer_sizes(a, **small))
    t_large = choose_tiling(g, with_buffer_sizes(a, **large))
    assert t_large.dram_bytes(g) <= t_small.dram_bytes(g)
    assert t_large.dram_read_bytes(g) >= g.a_dram_bytes + g.b_dram_bytes  # compulsory


@settings(max_examples=8, deadline=None)
@given(sizes=st.tuples(*[st.integers(1, 64)] * 3), grow=st.tuples(*[st.integers(0, 64)] * 3),
       name=st.sampled_from(["edge-16x16", "eyeriss-like"]))
def test_simulated_dram_bytes_never_grow_with_sram(sizes, grow, name):
    base = arch(name)
    graph = build_graph(resolve_model("lenet"), 2)
    names = ("ifmap", "filter", "ofmap")
    small = {b: _min_bytes(base, b) + 1024 * s for b, s in zip(names, sizes)}
    large = {b: small[b] + 1024 * d for b, d in zip(names, grow)}

    def dram(sz):
        t = simulate(with_buffer_sizes(base, **sz), graph).total()
        return t["dram_read_bytes"] + t["dram_write_bytes"]

    assert dram(large) <= dram(small)


# -- energy is counts x table ------------------------------------------------------------------------
PRICE = {  # counter -> (table entry, component, units of the entry per count), written from the docs
    "mac_int8": ("mac_int8", "mac_array", 1), "mac_fp32": ("mac_fp32", "mac_array", 1),
    "vector_int8_op": ("vector_int8_op", "vector", 1), "vector_int32_op": ("vector_int32_op", "vector", 1),
    "vector_fp32_op": ("vector_fp32_op", "vector", 1),
    "ifmap_read_bytes": ("ifmap_read", "ifmap", 1 / 8), "ifmap_write_bytes": ("ifmap_write", "ifmap", 1 / 8),
    "filter_read_bytes": ("filter_read", "filter", 1 / 8), "filter_write_bytes": ("filter_write", "filter", 1 / 8),
    "ofmap_read_bytes": ("ofmap_read", "ofmap", 1 / 8), "ofmap_write_bytes": ("ofmap_write", "ofmap", 1 / 8),
    "dram_read_bytes": ("dram", "dram", 8), "dram_write_bytes": ("dram", "dram", 8),
}


def by_hand(counts, table):
    out = {c: 0.0 for c in ("mac_array", "vector", "ifmap", "filter", "ofmap", "dram")}
    for counter in sorted(counts):
        if counter in PRICE:
            entry, component, units = PRICE[counter]
            out[component] += counts[counter] * (table[entry].pj * units)
    return out


def test_energy_equals_counts_times_table(runs):
    _, results = runs
    for result in results.values():
        for n in result.nodes:
            assert dict(n.energy_pj) == by_hand(n.counts, result.arch.energy), n.name
        assert result.energy_pj == sum(sum(n.energy_pj.values()) for n in result.nodes)
        assert result.total()["energy_pj"] == pytest.approx(result.energy_pj, rel=1e-12)


def test_mac_energy_by_hand():
    graph = build_graph(resolve_model("mlp"), 2)
    result = simulate(arch("edge-16x16"), graph)
    macs = sum(n.macs for n in result.nodes)
    assert sum(n.energy_pj["mac_array"] for n in result.nodes) == pytest.approx(0.3 * macs, rel=1e-12)


def test_reprice_without_resimulating(runs):
    _, results = runs
    result = results["edge-16x16"]
    table = dict(result.arch.energy)
    table["dram"] = EnergyEntry(2 * table["dram"].pj, "bit", "test: doubled")
    again = result.reprice(freeze_table(table))
    for a, b in zip(result.nodes, again.nodes):
        assert a.counts == b.counts and a.cycles == b.cycles
        assert b.energy_pj["dram"] == 2 * a.energy_pj["dram"]
        assert b.energy_pj["mac_array"] == a.energy_pj["mac_array"]


def test_fp32_twin_uses_fp32_energy_and_four_byte_words():
    from hwmodels.sim import simulate_with_fp32

    graph = build_graph(resolve_model("lenet"), 2)
    i8, f32 = simulate_with_fp32(arch("array-32x32"), graph)
    assert all("mac_int8" not in n.counts for n in f32.nodes)
    assert sum(n.counts.get("mac_fp32", 0) for n in f32.nodes) == graph.macs()
    assert f32.weight_bytes == 4 * i8.weight_bytes
    assert f32.activation_stash_bytes == 4 * i8.activation_stash_bytes
    assert f32.energy_pj > i8.energy_pj
    assert FIXED_DEFAULTS["mac_fp32"].pj == pytest.approx(3.7 + 0.9)
