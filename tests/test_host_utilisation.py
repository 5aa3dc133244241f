"""A calibrated host's utilisation never passes 100 %: it is a fraction of the fastest rate the model
prices a GEMM at when that beats the nominal array (a boosting core, two dot-product pipes), and the
report says so. Hosts are written by hand here (tests/test_hw_host.py's document); nothing is timed."""
import math

from hwmodels.host import kernel_key
from hwmodels.report import markdown
from hwmodels.sim import simulate
from nitisim.cli import main
from nitisim.contract.graph import build_graph, node_macs
from nitisim.contract.models import builtin_models
from test_hw_host import HOST_DOC, host_arch

PES = HOST_DOC["array"]["rows"] * HOST_DOC["array"]["cols"]  # 128
FAST = 500.0  # MACs per cycle of a probed kernel: about 4x the nominal array


def _lenet_with_a_fast_probe(batch=16):
    """LeNet and a host whose kernel table has fc1's forward call at FAST MACs per cycle."""
    graph = build_graph(builtin_models()["lenet"], batch)
    fc1 = next(n for n in graph.nodes if n.name == "fc1.fwd")
    macs = node_macs(graph, fc1)
    arch = host_arch(**{"host.kernels": {kernel_key(graph, fc1): math.ceil(macs / FAST)}})
    return arch, graph, macs / math.ceil(macs / FAST)


def _all_utilisations(result):
    t = result.total()
    return [t["utilization"], *(r.utilization for r in result.layers()), *(r.utilization for r in result.phases_summary())]


def test_a_probe_faster_than_the_array_sets_the_peak_and_nothing_passes_100_percent():
    arch, graph, rate = _lenet_with_a_fast_probe()
    result = simulate(arch, graph)
    fc1 = next(n for n in result.nodes if n.name == "fc1.fwd")
    assert fc1.macs / (fc1.cycles * PES) > 1  # against the nominal array this node was over 100 %
    assert result.peak_macs_per_cycle == rate > PES
    assert result.total()["peak_macs_per_cycle"] == rate
    utils = _all_utilisations(result)
    assert all(0 <= u <= 1 for u in utils) and max(utils) > 0
    assert fc1.macs / (fc1.cycles * rate) == 1.0  # the GEMM runs at the peak
    row = next(r for r in result.layers() if r.name == "fc1" and r.phase == "forward")
    assert row.nodes == ("fc1.fwd", "fc1.requant")  # its row adds the requantize (it counts with its GEMM)
    assert row.utilization == row.macs / (row.cycles * rate) < 1.0


def test_a_fused_conv_counts_its_requantize(capsys):
    """A calibrated CPU host times a conv's GEMM call as its deferred set-up (the C backend runs the
    GEMM inside the requantize that reads it): the conv rows' utilisation counts that requantize."""
    graph = build_graph(builtin_models()["lenet"], 16)
    nodes = {n.name: n for n in graph.nodes}
    conv2 = nodes["conv2.fwd"]
    macs = node_macs(graph, conv2)
    # the GEMM call: 100 cycles; its requantize: the GEMM's work at 100 MACs per cycle and more
    kernels = {kernel_key(graph, conv2): 100, kernel_key(graph, nodes["conv2.requant"]): macs // 100}
    result = simulate(host_arch(**{"host.kernels": kernels}), graph)
    stats = {n.name: n for n in result.nodes}
    assert stats["conv2.fwd"].cycles == 100 and stats["conv2.requant"].cycles == macs // 100
    assert "conv2.fwd" in result.fused_gemms and "fc1.fwd" not in result.fused_gemms
    assert macs / (100 * PES) > 100  # the call alone would claim over 10,000 %
    assert result.peak_macs_per_cycle == PES  # the pair runs at under 100 MACs per cycle: no new peak
    row = next(r for r in result.layers() if r.name == "conv2" and r.phase == "forward")
    assert row.utilization == macs / ((100 + macs // 100) * PES)
    assert all(0 <= u <= 1 for u in _all_utilisations(result))
    from hwmodels.report import summary

    assert "conv GEMMs (forward and input gradient) run inside the requantize" in markdown(summary(result))


def test_class_rates_above_the_array_set_the_peak():
    arch = host_arch(**{"host.gemm_macs_per_cycle.linear_forward": 1000.0})
    result = simulate(arch, build_graph(builtin_models()["mlp"], 64))
    assert result.peak_macs_per_cycle >= 1000.0
    assert all(0 <= u <= 1 for u in _all_utilisations(result))


def test_a_host_within_its_array_keeps_the_array_as_peak():
    """Every rate of HOST_DOC is under its 128 PEs: utilisation stays MACs / (cycles x PEs)."""
    result = simulate(host_arch(), build_graph(builtin_models()["lenet"], 16))
    t = result.total()
    assert result.peak_macs_per_cycle == PES
    assert t["utilization"] == t["macs"] / (t["cycles"] * PES)
    assert "fastest this calibrated host" not in markdown(_summary(result))


def _summary(result):
    from hwmodels.report import summary

    return summary(result)


def test_the_report_and_the_simulate_line_say_what_the_peak_is(tmp_path, capsys):
    import yaml

    arch, graph, rate = _lenet_with_a_fast_probe(batch=16)
    doc = yaml.safe_load(yaml.safe_dump(HOST_DOC))
    doc["host"]["kernels"] = dict(arch.host.kernels)
    path = tmp_path / "fast-host.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["simulate", str(path), "--model", "lenet", "--batch", "16", "--out", str(tmp_path / "s")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    pct = float(line.split("utilisation ")[1].split(" %")[0])
    assert 0 < pct <= 100
    assert f"of the measured peak {rate:,.1f} MACs/cycle (nominal array: {PES} PEs)" in line
    report = (tmp_path / "s" / "report.md").read_text()
    assert f"Utilisation is of {rate:,.1f} MACs per cycle, the fastest this calibrated host is measured at" in report
