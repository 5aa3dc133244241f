"""The calibrated host model prices a ResNet's node-call vector ops (add: residual sums and fan-in
error sums; global_avgpool and its gradient) from probes of the C kernels at the graph's own shapes,
like the GEMMs and pools: every op on the node-call path is a table op (hwmodels/host.py TABLE_OPS),
so a new op needs no line in the host model or in calibration."""
import numpy as np

from hwmodels.host import TABLE_OPS, kernel_key
from nitisim.calibrate import kernels as kernels_module
from nitisim.contract.graph import build_graph
from nitisim.contract.models import builtin_models
from nitisim.contract.ops import OPS


def test_every_node_call_op_is_probed_at_its_own_shapes():
    assert {name for name, row in OPS.items() if row.node_call is not None} <= TABLE_OPS
    assert {"add", "global_avgpool", "global_avgpool_grad"} <= TABLE_OPS


def test_a_resnet_step_gets_one_probe_per_distinct_add_and_pool_call(monkeypatch):
    from gpu_backend.backends import cpu_kernel_table

    graph = build_graph(builtin_models()["resnet-20-28"], 2)
    wanted = {kernel_key(graph, n) for n in graph.nodes if n.op in ("add", "global_avgpool", "global_avgpool_grad")}
    assert any(k.startswith("add int8[2x28x28x16] int8[2x28x28x16] mode=") for k in wanted)
    assert "global_avgpool int8[2x7x7x64]" in wanted
    assert any(k.startswith("global_avgpool_grad int8[2x64] input_shape=2x7x7x64") for k in wanted)
    probes = kernels_module.table_probes(cpu_kernel_table(1), graph, 2, np.random.default_rng(0))
    probed = {p.key: p.seconds for p in probes}
    assert wanted <= set(probed) and all(probed[k] > 0 for k in wanted)
