"""The calibrated host model's curves for a ResNet's node-call vector ops: add (residual sums and
fan-in error sums), global_avgpool and global_avgpool_grad are probed on the C kernels like relu
and priced from those curves (hwmodels/host.py curve_key, nitisim/calibrate/kernels.py)."""
import numpy as np

from hwmodels.host import curve_key
from nitisim.calibrate import kernels as kernels_module
from nitisim.contract.graph import build_graph
from nitisim.contract.models import builtin_models


def test_a_resnet_graph_reads_curves_for_add_and_the_global_pools():
    graph = build_graph(builtin_models()["resnet-20-28"], 4)
    keys = {n.op: curve_key(graph, n) for n in graph.nodes if n.op in ("add", "global_avgpool", "global_avgpool_grad")}
    mode = next(n for n in graph.nodes if n.op == "add").attr("mode")
    assert keys["add"][0] == f"add_{mode}"
    assert keys["global_avgpool"] == ("global_avgpool_7x7x64", 4 * 7 * 7 * 64)  # the map's elements, not (N, C)
    assert keys["global_avgpool_grad"] == ("global_avgpool_grad_7x7x64", 4 * 7 * 7 * 64)
    assert {keys[op][0] for op in keys} <= set(kernels_module.needed_curves(graph))
    # a chain model reads none of them
    assert not {c for c in kernels_module.needed_curves(build_graph(builtin_models()["lenet"], 4))
                if c.startswith(("add", "global"))}


def test_the_curves_probe_the_c_kernels_at_whole_images_of_the_map(monkeypatch):
    """Each point times the real kernel on a synthetic node; a pool's points sit at whole images of
    its window and channels (at least the grid's count), and a map bigger than every grid size
    still gets the two points a curve needs."""
    from gpu_backend.backends import cpu_kernel_table

    monkeypatch.setattr(kernels_module, "GRID_ELEMENTS", (64, 4096, 16384))
    table = cpu_kernel_table(1)
    names = ("add_pseudo_stochastic", "global_avgpool_7x7x64", "global_avgpool_grad_7x7x64", "global_avgpool_8x8x512")
    curves = kernels_module.curve_probes(table, names, 1 << 20, 2, np.random.default_rng(0))
    at = {name: [int(k.key.rsplit("@", 1)[1]) for k in points] for name, points in curves.items()}
    assert at["add_pseudo_stochastic"] == [64, 4096, 16384, 1310720]
    assert at["global_avgpool_7x7x64"] == [3136, 6272, 18816, 1310848]  # 1, 2, 6, 418 images of 3136
    assert at["global_avgpool_grad_7x7x64"] == at["global_avgpool_7x7x64"]
    assert at["global_avgpool_8x8x512"] == [32768, 1310720]  # 1 and 40 images: the grid's sizes all round to one
    assert all(k.seconds > 0 for points in curves.values() for k in points)
