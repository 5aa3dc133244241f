"""Lowering of graph nodes to GEMMs and vector passes, and tensor placement (pure functions)."""
from __future__ import annotations

import pytest

from hwmodels.config import CONFIG_DIR, load_accelerator
from hwmodels.lowering import GemmWork, VectorWork, ViewWork, lower_node
from nitisim.contract.ops import report_phase
from hwmodels.placement import activation_stash, place, tensor_roots
from hwmodels.sim import simulate
from hwmodels.spec import float32_variant
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU, resolve_model
from nitisim.contract.ops import OPS

# 17x17x5 input, conv 3x3 stride 2 pad 1 -> 9x9x8; 1x1 conv -> 9x9x12; pool -> 4x4x12; 192 -> 10
STRIDED = ModelSpec("strided", (17, 17, 5), (
    Conv(8, 3, stride=2, padding=1), ReLU(), Conv(12, 1), ReLU(), MaxPool(2, 2), Flatten(),
    Linear(16), ReLU(), Dropout(0.5), Linear(10)))


def lowered(graph, **kw):
    return {n.name: lower_node(graph, n, **kw) for n in graph.nodes}


def test_conv_gemm_shapes_follow_the_spec_table():
    b = 3
    w = lowered(build_graph(STRIDED, b))
    fwd = w["conv1.fwd"]
    assert isinstance(fwd, GemmWork) and fwd.phase == "forward"
    assert (fwd.m, fwd.k, fwd.n) == (b * 9 * 9, 3 * 3 * 5, 8)  # padding and stride through E, F
    assert fwd.a.tensor == "x" and fwd.a.dense_elements == b * 81 * 45  # the im2col view
    wg = w["conv1.w_grad"]
    assert (wg.m, wg.k, wg.n, wg.phase) == (45, b * 81, 8, "weight_grad")
    ig = w["conv2.in_grad"]
    assert (ig.m, ig.k, ig.n, ig.phase) == (b * 81, 12, 1 * 1 * 8, "input_grad")
    assert ig.col2im_adds == ig.m * ig.n
    assert "conv1.in_grad" not in w  # nothing below the first layer


def test_linear_gemm_shapes():
    b = 3
    w = lowered(build_graph(STRIDED, b))
    assert (w["fc1.fwd"].m, w["fc1.fwd"].k, w["fc1.fwd"].n) == (b, 192, 16)
    assert (w["fc1.in_grad"].m, w["fc1.in_grad"].k, w["fc1.in_grad"].n) == (b, 16, 192)
    assert (w["fc1.w_grad"].m, w["fc1.w_grad"].k, w["fc1.w_grad"].n) == (192, b, 16)
    assert w["fc1.in_grad"].col2im_adds == 0


def test_vector_and_view_work():
    g = build_graph(STRIDED, 2)
    w = lowered(g)
    rq = w["conv1.requant"]
    assert isinstance(rq, VectorWork) and [p.name for p in rq.passes] == ["range", "shift"]
    assert all(p.reads == ("conv1.acc",) for p in rq.passes) and rq.passes[1].writes == ("conv1.out",)
    assert isinstance(w["flatten1.fwd"], ViewWork) and isinstance(w["flatten1.bwd"], ViewWork)
    assert w["fc1.update"].phase == "update" and w["relu1.fwd"].phase == "vector"
    assert report_phase(g.nodes[0].op, g.nodes[0].phase) == "forward"
    # a requantize counts with the GEMM whose int32 output it reads (nitisim.contract.ops)
    assert rq.phase == "forward" and w["conv2.in_grad.requant"].phase == "input_grad"
    # float32 reading: requantize is an alias, the update one SGD pass
    f = lowered(g, float32=True)
    assert isinstance(f["conv1.requant"], ViewWork) and len(f["fc1.update"].passes) == 1


@pytest.mark.parametrize("k,s,hw,out", [(3, 2, (9, 9), (5, 5)), (3, 2, (8, 8), (4, 4)), (3, 1, (7, 6), (7, 6))])
def test_padded_pool_counts_the_padded_window(k, s, hw, out):
    """A padded max pool: outputs from conv_out with the padding, k*k - 1 compares each over the whole
    padded window; the backward re-finds each window's maximum and writes every input once."""
    b, c = 2, 4
    g = build_graph(ModelSpec("p", (*hw, c), (Conv(c, 1), MaxPool(k, s, 1), Flatten(), Linear(10))), b)
    w = lowered(g)
    n_out, n_in = b * out[0] * out[1] * c, b * hw[0] * hw[1] * c
    fwd, bwd = w["pool1.fwd"], w["pool1.bwd"]
    assert g.tensor("pool1.out").shape == (b, *out, c)
    assert isinstance(fwd, VectorWork) and [p.ops for p in fwd.passes] == [(("int8", (k * k - 1) * n_out),)]
    assert fwd.passes[0].reads == ("conv1.out",) and fwd.passes[0].writes == ("pool1.out",)
    assert [p.ops for p in bwd.passes] == [(("int8", (k * k - 1) * n_out + n_in),)]


@pytest.mark.parametrize("options", [NumericsOptions(), NumericsOptions(update_rule="momentum", loss_variant="fine"),
                                     NumericsOptions(update_rule="shadow16", activation_rounding="stochastic",
                                                     error_rounding="nearest")])
def test_every_op_has_a_lowering_rule(options):
    g = build_graph(STRIDED, 2, options)
    seen = {n.op for n in g.nodes}
    for node in g.nodes:
        work = lower_node(g, node)
        kind = {GemmWork: "gemm", VectorWork: "vector", ViewWork: "view"}[type(work)]
        assert kind == node.kind, node.name
    # add and the global average pool: the builder makes none until issue 25; tests/test_add_op.py
    # and tests/test_avgpool_op.py lower them in hand-built graphs
    assert seen == set(OPS) - {"add", "global_avgpool", "global_avgpool_grad"}


def test_views_cost_nothing():
    result = simulate(load_accelerator(CONFIG_DIR / "edge-16x16.yaml"), build_graph(STRIDED, 2))
    for n in result.nodes:
        if n.kind == "view":
            assert n.cycles == 0 and n.macs == 0 and n.energy_total_pj == 0 and n.dram_read_bytes == 0


def test_activation_stash_is_what_backward_reads():
    g = build_graph(resolve_model("lenet"), 2)
    stash = activation_stash(g, tensor_roots(g))
    assert stash == {"x", "conv1.out", "relu1.out", "pool1.out", "conv2.out", "relu2.out", "pool2.out",
                     "fc1.out", "relu3.out"}
    arch = load_accelerator(CONFIG_DIR / "edge-16x16.yaml")
    p = place(g, list(g.nodes), arch)
    assert p.activation_stash_bytes == sum(g.tensor(t).size for t in stash)  # all int8
    assert p.peak_storage_bytes >= p.activation_stash_bytes + p.weight_bytes
    assert float32_variant(arch).element_bytes("int8") == 4


def test_placement_hands_small_tensors_over_on_chip():
    g = build_graph(resolve_model("lenet"), 2)
    nodes = list(g.nodes)
    idx = {n.name: i for i, n in enumerate(nodes)}
    big = load_accelerator(CONFIG_DIR / "tpu-like-128x128.yaml")  # 8 MiB handoff space
    p = place(g, nodes, big)
    # the int32 accumulator goes straight to requantize, never to DRAM
    assert "conv1.acc" in p.nodes[idx["conv1.fwd"]].keep_onchip
    assert "conv1.acc" not in p.nodes[idx["conv1.fwd"]].to_dram
    assert "conv1.acc" in p.nodes[idx["conv1.requant"]].onchip_inputs
    # the stash still goes to DRAM even when handed over
    assert "conv1.out" in p.nodes[idx["conv1.requant"]].to_dram
    # a tiny ofmap buffer spills the accumulator instead
    small = load_accelerator(CONFIG_DIR / "eyeriss-like.yaml")
    q = place(g, nodes, small)
    assert "conv1.acc" in q.nodes[idx["conv1.fwd"]].to_dram and q.nodes[idx["conv1.fwd"]].spill_write_bytes > 0
