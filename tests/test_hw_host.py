"""The calibrated machine model (hwmodels/host.py): shape classes, cycle formulas, the simulator
using them, the strict `host:` / `calibration:` schema, and the shipped H200 config. Nothing timed."""
import copy
import math

import pytest
import yaml

from hwmodels.config import CONFIG_DIR, load_accelerator, parse_accelerator
from hwmodels.host import gemm_class, gemm_cycles, pass_cycles
from hwmodels.lowering import GemmWork, VectorWork, lower_node
from hwmodels.sim import simulate
from hwmodels.spec import float32_variant
from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.contract.graph import build_graph, node_macs
from nitisim.contract.models import builtin_models

H200 = CONFIG_DIR.parents[0] / "hosts" / "h200-sxm.yaml"

HOST_DOC = {
    "version": 1, "name": "test-host", "array": {"rows": 4, "cols": 32, "dataflow": "os"}, "clock_mhz": 1000,
    "buffers": {b: {"bytes": 1 << 20, "width_bytes": 64, "banks": 2, "double_buffered": True}
                for b in ("ifmap", "filter", "ofmap")},
    "dram": {"bandwidth_gb_s": 1e6, "latency_cycles": 0, "technology": "DDR3"},  # effectively unbounded
    "vector": {"lanes": 8},
    "host": {"engine": "test", "cores": 2, "parallel_min_elements": 100_000, "gemm_tile": {"m": 1, "k": 1, "n": 1},
             "gemm_macs_per_cycle": {"narrow": 10.0, "conv_forward": 100.0, "conv_input_grad": 50.0,
                                     "conv_weight_grad": 80.0, "linear_forward": 120.0, "linear_input_grad": 110.0,
                                     "linear_weight_grad": 90.0},
             "vector_ops_per_cycle": {"int8": 16.0, "int32": 4.0}, "call_cycles": {"gemm": 1000, "vector": 300}},
    "calibration": {"date": "2026-12-03", "command": "by hand", "machine": "a test",
                    "probes": {"gemm_forward": {"value": 1e11, "unit": "MAC/s", "what": "made up"}}},
}


def host_arch(**changes):
    doc = copy.deepcopy(HOST_DOC)
    for path, value in changes.items():
        where = doc
        *parents, last = path.split(".")
        for key in parents:
            where = where[key]
        if value is None:
            del where[last]
        else:
            where[last] = value
    return parse_accelerator(doc, "host.yaml")


def test_gemm_class_narrow_below_32_then_engine_and_phase():
    assert gemm_class("conv2d", "forward", 1000, 31, 1000) == "narrow"
    assert gemm_class("conv2d_weight_grad", "weight_grad", 1000, 32, 32) == "conv_weight_grad"
    assert gemm_class("linear_input_grad", "input_grad", 31, 5000, 5000) == "narrow"
    assert gemm_class("linear_input_grad", "input_grad", 32, 5000, 5000) == "linear_input_grad"
    with pytest.raises(ValueError):
        gemm_class("update", "update", 64, 64, 64)


def test_cycle_formulas_by_hand():
    host = host_arch().host
    assert gemm_cycles(host, "conv2d", "forward", 64, 64, 64) == 1000 + math.ceil(64 ** 3 / 100)
    assert gemm_cycles(host, "linear", "forward", 64, 64, 64) == 1000 + math.ceil(64 ** 3 / 120)
    assert gemm_cycles(host, "conv2d", "forward", 64, 16, 64) == 1000 + math.ceil(64 * 16 * 64 / 10)  # narrow
    ops = (("int8", 1600), ("int32", 401))
    assert pass_cycles(host, ops, 100_000) == 100 + 101  # at the threshold: one core
    assert pass_cycles(host, ops, 100_001) == 50 + 51  # above: both cores


def test_the_parallel_threshold_counts_elements_whatever_their_width():
    """The C library goes parallel above the same element count of a kernel's largest input for int8
    and int32 kernels, so at a 100,000-element threshold LeNet's conv2 requantize (51,200 int32
    elements, 204,800 bytes) stays on one core, and relu1 (184,320 int8 elements) goes to both."""
    arch = host_arch()
    graph = build_graph(builtin_models()["lenet"], 16)
    by_name = {n.name: n for n in simulate(arch, graph).nodes}
    nodes = {n.name: n for n in graph.nodes}
    for name, elements, parallel in (("conv2.requant", 51_200, False), ("relu2.fwd", 51_200, False),
                                     ("relu1.fwd", 184_320, True)):
        passes = lower_node(graph, nodes[name]).passes
        assert max(graph.tensor(t).size for p in passes for t in p.reads) == elements
        largest = 10 ** 9 if parallel else 0  # far above or below the threshold
        expected = arch.host.call_cycles["vector"] + sum(pass_cycles(arch.host, p.ops, largest) for p in passes)
        assert by_name[name].compute_cycles == expected, name
    assert pass_cycles(arch.host, (("int32", 1000),), 0) != pass_cycles(arch.host, (("int32", 1000),), 10 ** 9)


def test_an_old_config_with_the_byte_threshold_is_refused(tmp_path, capsys):
    """parallel_min_bytes (the threshold before it counted elements) is an unknown key: the strict
    reader's one line names the file and the key, and lists parallel_min_elements."""
    with pytest.raises(UserInputError) as err:
        host_arch(**{"host.parallel_min_elements": None, "host.parallel_min_bytes": 4 << 20})
    assert err.value.source == "host.yaml" and err.value.field == "host.parallel_min_bytes"
    assert "unknown key" in err.value.message and "parallel_min_elements" in err.value.message
    doc = copy.deepcopy(HOST_DOC)
    doc["host"]["parallel_min_bytes"] = doc["host"].pop("parallel_min_elements")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["simulate", str(path), "--model", "mlp", "--batch", "8", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "old.yaml: host.parallel_min_bytes: unknown key" in err


def test_gemm_work_is_padded_to_the_engine_tile():
    host = host_arch(**{"host.gemm_tile": {"m": 32, "k": 64, "n": 32}}).host
    assert gemm_cycles(host, "linear", "forward", 33, 64, 32) == 1000 + math.ceil(64 * 64 * 32 / 120)
    assert gemm_cycles(host, "conv2d", "input_grad", 64, 65, 64) == 1000 + math.ceil(64 * 128 * 64 / 50)
    assert gemm_cycles(host, "linear", "weight_grad", 64, 64, 64) == 1000 + math.ceil(64 ** 3 / 90)  # aligned


def test_simulation_prices_every_node_with_the_host_rates():
    arch = host_arch()
    graph = build_graph(builtin_models()["lenet"], 16)
    result = simulate(arch, graph)
    by_name = {n.name: n for n in result.nodes}
    host = arch.host
    for node in graph.nodes:
        work = lower_node(graph, node)
        if isinstance(work, GemmWork):
            stats = by_name[node.name]
            assert stats.compute_cycles == gemm_cycles(host, node.op, work.phase, work.m, work.k, work.n)
            assert stats.macs == node_macs(graph, node)
        elif isinstance(work, VectorWork):
            largest = [max(graph.tensor(t).size for t in p.reads) for p in work.passes]  # elements
            expected = host.call_cycles["vector"] + sum(pass_cycles(host, p.ops, b) for p, b in zip(work.passes, largest))
            assert by_name[node.name].compute_cycles == expected, node.name
    # the DRAM is so fast here that the step is the nodes' compute plus a cycle per DMA transfer
    compute = sum(n.compute_cycles for n in result.nodes)
    assert compute <= result.cycles <= compute * 1.0001


def test_float32_twin_drops_the_host_rates():
    arch = host_arch()
    assert arch.host is not None and float32_variant(arch).host is None


def test_compat_scalesim_refuses_a_machine_model():
    with pytest.raises(UserInputError, match="compat"):
        simulate(host_arch(), build_graph(builtin_models()["mlp"], 8), compat="scalesim")


@pytest.mark.parametrize("change, key, problem", [
    ({"calibration": None}, "calibration", "go together"),
    ({"host": None}, "host", "go together"),
    ({"host.gemm_macs_per_cycle.narrow": None}, "host.gemm_macs_per_cycle.narrow", "missing"),
    ({"host.gemm_macs_per_cycle.conv_forward": -1.0}, "host.gemm_macs_per_cycle.conv_forward", "positive"),
    ({"host.vector_ops_per_cycle.int16": 3.0}, "host.vector_ops_per_cycle.int16", "unknown key"),
    ({"host.call_cycles.gemm": 1.5}, "host.call_cycles.gemm", "integer"),
    ({"host.cores": 0}, "host.cores", "at least 1"),
    ({"host.gemm_tile": {"m": 32, "k": 64}}, "host.gemm_tile.n", "missing"),
    ({"host.gemm_tile": {"m": 0, "k": 64, "n": 32}}, "host.gemm_tile.m", "at least 1"),
    ({"calibration.date": ""}, "calibration.date", "non-empty"),
    ({"calibration.probes": {}}, "calibration.probes", "at least one"),
    ({"calibration.probes": {"x": {"value": "fast", "unit": "s", "what": "y"}}}, "calibration.probes.x.value",
     "number"),
    ({"numerics": {"format": "fp32"}}, "host", "int8"),
])
def test_bad_host_sections_name_file_and_key(change, key, problem):
    with pytest.raises(UserInputError) as err:
        host_arch(**change)
    assert err.value.source == "host.yaml" and err.value.field == key and problem in err.value.message


def test_cli_bad_host_config_is_one_line_and_exit_2(tmp_path, capsys):
    doc = copy.deepcopy(HOST_DOC)
    del doc["host"]["engine"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["simulate", str(path), "--model", "mlp", "--batch", "8", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml: host.engine: missing required key" in err


def test_shipped_h200_model_matches_its_datasheet_arithmetic():
    arch = load_accelerator(H200)
    hz = arch.clock_mhz * 1e6
    # 1,979 dense int8 TOPS = 989.5 T MAC/s; 4.8 TB/s HBM3e
    assert arch.host.gemm_macs_per_cycle["linear_forward"] * hz == pytest.approx(989.5e12, rel=2e-3)
    assert arch.dram.bandwidth_bytes_per_cycle * hz == pytest.approx(4.8e12, rel=1e-9)
    assert arch.host.gemm_macs_per_cycle["conv_forward"] == arch.array.pes * 132  # one array per SM
    # the GPU model is not one of the accelerators `nitisim run` compares every run with
    assert not (CONFIG_DIR / H200.name).exists()


def measured_tables(graph):
    """A kernel table with a distinct made-up time per GEMM / pooling / loss key of `graph`, and
    made-up curves for every elementwise curve it reads."""
    from hwmodels.host import TABLE_OPS, curve_key, kernel_key

    keys = sorted({kernel_key(graph, n) for n in graph.nodes if n.op in TABLE_OPS})
    kernels = {k: 5000 + 100 * i for i, k in enumerate(keys)}
    names = sorted({curve_key(graph, n)[0] for n in graph.nodes if curve_key(graph, n) is not None})
    curves = {name: [[1024, 2000.0 + i], [65536, 8000.0], [1 << 20, 64000.0]] for i, name in enumerate(names)}
    return kernels, curves


def test_kernel_key_names_op_shapes_and_shape_attributes_only():
    from hwmodels.host import kernel_key

    graph = build_graph(builtin_models()["lenet"], 8)
    by_name = {n.name: n for n in graph.nodes}
    assert kernel_key(graph, by_name["conv2.in_grad"]) == (
        "conv2d_input_grad int8[8x8x8x50] int8[50x5x5x20] input_shape=8x12x12x20,padding=0,stride=1")
    assert kernel_key(graph, by_name["fc1.w_grad"]) == "linear_weight_grad int8[8x800] int8[8x500] dtype=int32"
    # the same kernel at another batch is another key
    assert kernel_key(build_graph(builtin_models()["lenet"], 16), by_name["fc1.w_grad"]).endswith("dtype=int32")
    assert "int8[16x800]" in kernel_key(build_graph(builtin_models()["lenet"], 16), by_name["fc1.w_grad"])


def test_interpolation_is_log_log_between_points_and_proportional_beyond():
    from hwmodels.host import interpolate

    curve = ((1000, 10.0), (4000, 20.0), (16000, 80.0))
    assert interpolate(curve, 500) == 10.0  # below the grid: the smallest call's time
    assert interpolate(curve, 1000) == pytest.approx(10.0) and interpolate(curve, 4000) == pytest.approx(20.0)
    assert interpolate(curve, 2000) == pytest.approx(10.0 * math.sqrt(2))  # halfway in log between 10 and 20
    assert interpolate(curve, 8000) == pytest.approx(40.0)
    assert interpolate(curve, 32000) == pytest.approx(160.0)  # beyond: time per element of the last point


@pytest.mark.parametrize("model", ["lenet", "resnet-20-28"])
def test_simulation_takes_measured_kernels_and_curves_before_the_rates(model):
    """Every node is priced from its measured kernel or its curve: on a ResNet also the residual and
    fan-in adds and the global pool and its gradient (node-call ops: table probes at their shapes)."""
    from hwmodels.host import TABLE_OPS, curve_key, interpolate, kernel_key

    graph = build_graph(builtin_models()[model], 16)
    if model.startswith("resnet"):
        assert {"add", "global_avgpool", "global_avgpool_grad"} <= {n.op for n in graph.nodes if n.op in TABLE_OPS}
    kernels, curves = measured_tables(graph)
    arch = host_arch(**{"host.kernels": kernels, "host.curves": curves,
                        "dram.bandwidth_gb_s": 0.001})  # a slow DRAM: its time must not be added
    result = simulate(arch, graph)
    by_name = {n.name: n for n in result.nodes}
    for node in graph.nodes:
        stats = by_name[node.name]
        if node.op in TABLE_OPS:
            assert stats.compute_cycles == kernels[kernel_key(graph, node)], node.name
        elif curve_key(graph, node) is not None:
            name, elements = curve_key(graph, node)
            points = tuple((n, c) for n, c in curves[name])
            assert stats.compute_cycles == math.ceil(interpolate(points, elements)), node.name
    compute = sum(n.compute_cycles for n in result.nodes)
    assert compute <= result.cycles <= compute * 1.0001  # DRAM bytes counted, no DRAM time
    assert result.total()["dram_read_bytes"] > 0


def test_nodes_the_tables_lack_fall_back_to_the_rates():
    graph = build_graph(builtin_models()["lenet"], 16)
    arch = host_arch(**{"host.kernels": {"linear int8[1x1] int8[1x1]": 7}, "host.curves": {"relu": [[1, 1], [2, 2]]}})
    by_name = {n.name: n for n in simulate(arch, graph).nodes}
    work = lower_node(graph, next(n for n in graph.nodes if n.name == "fc1.fwd"))
    assert by_name["fc1.fwd"].compute_cycles == gemm_cycles(arch.host, "linear", "forward", work.m, work.k, work.n)


@pytest.mark.parametrize("change, key, problem", [
    ({"host.kernels": {"conv2d x": 0}}, "host.kernels.conv2d x", "at least 1"),
    ({"host.kernels": {"conv2d x": 1.5}}, "host.kernels.conv2d x", "integer"),
    ({"host.kernels": ["conv2d x"]}, "host.kernels", "mapping"),
    ({"host.curves": {"relu": [[1, 5]]}}, "host.curves.relu", "at least two"),
    ({"host.curves": {"relu": [[1, 5], [1, 6]]}}, "host.curves.relu", "increase"),
    ({"host.curves": {"relu": [[1, 5], [2, -6]]}}, "host.curves.relu", "positive"),
    ({"host.curves": {"relu": "fast"}}, "host.curves.relu", "pairs"),
    ({"host.spare": {}}, "host.spare", "unknown key"),
])
def test_bad_measured_tables_name_file_and_key(change, key, problem):
    with pytest.raises(UserInputError) as err:
        host_arch(**change)
    assert err.value.source == "host.yaml" and err.value.field == key and problem in err.value.message
