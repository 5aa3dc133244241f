"""`nitisim calibrate`: the YAML it writes (from known probe values: exact mapping, strict loader),
its bad inputs and impossible probes (one line, exit 2), and one real run on the C library.
Nothing asserts a time or a rate's size: only that each measured value lands where it belongs."""
import datetime as dt
from pathlib import Path

import pytest
import yaml

from hwmodels.config import load_accelerator, parse_accelerator
from nitisim.calibrate import probes as probes_module
from nitisim.calibrate.document import host_document, render
from nitisim.calibrate.kernels import KernelTime
from nitisim.calibrate.probes import HostFacts, Probe
from nitisim.calibrate.samples import read_samples, samples_path
from nitisim.cli import main
from nitisim.run_cli import GPU_MODEL, machine_model_step


def facts(**values) -> HostFacts:
    rates = {"call_gemm": 4e-6, "call_vector": 2e-6, "gemm_narrow": 1.0e11, "gemm_conv_forward": 4.0e11,
             "gemm_conv_input_grad": 3.0e11, "gemm_conv_weight_grad": 3.5e11, "gemm_linear_forward": 4.5e11,
             "gemm_linear_input_grad": 4.2e11, "gemm_linear_weight_grad": 3.9e11, "vector_int8": 3.0e10,
             "vector_int32": 2.0e10, "memory_bandwidth": 2.0e10} | values
    probes = tuple(Probe(name, value, "unit", f"probe {name}", 1e-4, 5) for name, value in rates.items())
    return HostFacts(machine="Test CPU, 2 logical CPUs", engine="avx512vnni", gemm_tile=(12, 4, 32), cores=2,
                     clock_mhz=2000.0,
                     l1d_bytes=48 << 10, l2_bytes=2 << 20, l3_bytes=32 << 20, parallel_min_elements=1 << 20,
                     probes=probes)


def test_document_maps_each_measurement_to_its_field():
    doc = host_document(facts(), name="h", command="nitisim calibrate", date="2026-12-03T12:00:00+00:00")
    arch = parse_accelerator(yaml.safe_load(render(doc)), "h.yaml")  # through the text, as a file would be
    hz = 2000e6
    host = arch.host
    assert host.engine == "avx512vnni" and host.cores == 2 and host.parallel_min_elements == 1 << 20
    assert host.gemm_tile == (12, 4, 32)
    for cls, rate in (("conv_forward", 4.0e11), ("narrow", 1.0e11), ("conv_weight_grad", 3.5e11),
                      ("linear_input_grad", 4.2e11)):
        assert host.gemm_macs_per_cycle[cls] * hz == pytest.approx(rate, rel=1e-4)
    assert host.vector_ops_per_cycle["int32"] * hz == pytest.approx(2.0e10, rel=1e-4)
    assert host.call_cycles == {"gemm": 8000, "vector": 4000}
    assert arch.dram.bandwidth_bytes_per_cycle * hz == pytest.approx(2.0e10, rel=1e-4)
    assert arch.ifmap.size_bytes == arch.ofmap.size_bytes == 2 << 20 and arch.filter.size_bytes == 48 << 10
    assert host.calibrated == "2026-12-03T12:00:00+00:00"
    assert doc["calibration"]["probes"]["gemm_conv_forward"]["value"] == 4.0e11
    assert set(doc["calibration"]["probes"]) == {p.name for p in facts().probes}


def test_document_writes_the_measured_kernels_and_curves():
    kernels = (KernelTime("linear int8[8x64] int8[32x64]", 2.5e-5, 9), KernelTime("maxpool int8[8x4x4x2] kernel=2", 1e-6, 7))
    curves = {"relu": (KernelTime("relu@4096", 2e-6, 9), KernelTime("relu@16384", 5e-6, 9)),
              "requantize_nearest_int32": (KernelTime("requantize_nearest_int32@4096", 4e-6, 9),
                                           KernelTime("requantize_nearest_int32@65536", 3.1e-5, 5))}
    f = HostFacts(**{**facts().__dict__, "kernels": kernels, "curves": curves})
    doc = host_document(f, name="h", command="nitisim calibrate", date="2026-12-03T12:00:00+00:00")
    host = parse_accelerator(yaml.safe_load(render(doc)), "h.yaml").host  # through the text
    # seconds x the 2000 MHz clock, one entry per key; curves keep their element counts in order
    assert dict(host.kernels) == {"linear int8[8x64] int8[32x64]": 50_000, "maxpool int8[8x4x4x2] kernel=2": 2000}
    assert host.curves["relu"] == ((4096, 4000.0), (16384, 10000.0))
    assert host.curves["requantize_nearest_int32"] == ((4096, 8000.0), (65536, 62000.0))
    probes = doc["calibration"]["probes"]
    assert probes["kernel:linear int8[8x64] int8[32x64]"] | {"what": None} == {
        "value": 2.5e-5, "unit": "s", "what": None, "seconds": 2.5e-5, "repeats": 9}
    assert probes["curve:requantize_nearest_int32@65536"]["repeats"] == 5
    assert len([k for k in probes if k.startswith(("kernel:", "curve:"))]) == 6
    # without a graph and curves (facts()), neither section is written
    assert "kernels" not in host_document(facts(), name="h", command="c")["host"]


def test_curves_add_one_point_above_the_threshold_in_elements_for_every_width(monkeypatch):
    """The library's parallel threshold is an element count whatever the width, so every curve, int8
    or int32, gets the same extra point: 1.25 x parallel_min_elements elements."""
    import numpy as np

    from nitisim.calibrate import kernels as kernels_module

    monkeypatch.setattr(kernels_module, "GRID_ELEMENTS", (64, 256))
    calls = {}

    def kernel(node, ctx, *ins):
        calls.setdefault(node.op, set()).add(ins[0].m.size)
        return ins[0].m.copy()

    names = ("relu", "relu_grad", "requantize_pseudo_stochastic_int32", "update_plain_int32")
    curves = kernels_module.curve_probes({op: kernel for op in ("relu", "relu_grad", "requantize", "update")},
                                         names, 1000, 1, np.random.default_rng(0))
    for name in names:
        assert [int(k.key.rsplit("@", 1)[1]) for k in curves[name]] == [64, 256, 1250], name
    assert calls == {op: {64, 256, 1250} for op in ("relu", "relu_grad", "requantize", "update")}


def test_document_keeps_odd_cache_sizes_loadable():
    odd = HostFacts(**{**facts().__dict__, "l1d_bytes": 48 * 1000 + 7, "l2_bytes": 1_250_000, "cores": 3})
    arch = parse_accelerator(host_document(odd, name="h", command="c"), "h.yaml")
    assert arch.filter.size_bytes <= 48 * 1000 + 7 and arch.ifmap.size_bytes <= 1_250_000
    assert dt.datetime.fromisoformat(arch.host.calibrated).date() == dt.datetime.now(dt.timezone.utc).date()


@pytest.mark.parametrize("argv, where", [
    (["--repeats", "0"], "--repeats"),
    (["--repeats", "100000"], "--repeats"),
    (["--threads", "-1"], "--threads"),
    (["--passes", "0"], "--passes"),
    (["--passes", "1000"], "--passes"),
    (["--name", "a b"], "--name"),
    (["--out", "model.txt"], "model.txt"),
    (["--model", "lenet"], "--batch"),
    (["--batch", "8"], "--model"),
    (["--model", "lenet", "--batch", "0"], "--batch"),
    (["--model", "no-such-model", "--batch", "8"], "no-such-model"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, where, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.yaml"))


def test_out_that_is_a_directory(capsys, tmp_path):
    folder = tmp_path / "x.yaml"
    folder.mkdir()
    assert main(["calibrate", "--out", str(folder)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_probe_the_timer_cannot_resolve_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(probes_module, "median_seconds", lambda fn, repeats, before=None: 0.0)
    assert main(["calibrate", "--out", str(tmp_path / "h.yaml"), "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "call_gemm" in err and "cannot resolve" in err
    assert not (tmp_path / "h.yaml").exists()


def test_no_c_library_is_one_line(capsys, tmp_path, monkeypatch):
    import gpu_backend.lib

    def broken():
        raise OSError("gcc: not found\nsecond line")

    monkeypatch.setattr(gpu_backend.lib, "cpu_library", broken)
    assert main(["calibrate", "--out", str(tmp_path / "h.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["nitisim: error: nitisim calibrate: C library: cannot build or load it: gcc: not found"]


def test_an_engine_this_machine_cannot_run_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NITISIM_CPU_ENGINE", "no-such-engine")
    assert main(["calibrate", "--out", str(tmp_path / "h.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-engine" in err and not (tmp_path / "h.yaml").exists()


def test_real_calibration_writes_a_model_the_simulator_loads(tmp_path, capsys):
    out = tmp_path / "host.yaml"
    assert main(["calibrate", "--out", str(out), "--name", "this-host", "--repeats", "1", "--passes", "2"]) == 0
    arch = load_accelerator(out)
    assert arch.name == "this-host" and arch.host is not None
    assert all(r > 0 for r in arch.host.gemm_macs_per_cycle.values())
    assert all(r > 0 for r in arch.host.vector_ops_per_cycle.values())
    doc = yaml.safe_load(out.read_text())
    assert doc["calibration"]["command"].startswith("nitisim calibrate --out") and "--passes 2" in doc["calibration"]["command"]
    assert all(p["value"] > 0 for p in doc["calibration"]["probes"].values())
    assert "wrote" in capsys.readouterr().out


def test_real_calibration_with_a_model_measures_each_of_its_kernels(tmp_path):
    from hwmodels.host import TABLE_OPS, curve_key, kernel_key, node_cycles
    from nitisim.calibrate.kernels import _gemm_producer
    from nitisim.contract.graph import build_graph
    from nitisim.contract.models import builtin_models

    out = tmp_path / "host.yaml"
    assert main(["calibrate", "--out", str(out), "--repeats", "1", "--passes", "1", "--model", "lenet", "--batch", "2"]) == 0
    host = load_accelerator(out).host
    graph = build_graph(builtin_models()["lenet"], 2)
    requants = [n for n in graph.nodes if n.op == "requantize"]
    assert requants and all(_gemm_producer(graph, n) is not None for n in requants)  # every one follows a GEMM
    assert set(host.kernels) == {kernel_key(graph, n) for n in graph.nodes if n.op in TABLE_OPS or n in requants}
    assert all(node_cycles(host, graph, n) == host.kernels[kernel_key(graph, n)] for n in requants)  # not the curve
    assert {curve_key(graph, n)[0] for n in graph.nodes if curve_key(graph, n)} <= set(host.curves)
    assert all(len(points) >= 2 for points in host.curves.values())
    doc = yaml.safe_load(out.read_text())
    assert doc["calibration"]["command"].endswith("--model lenet --batch 2")


def test_run_picks_the_machine_model_of_its_backend(tmp_path):
    text, step, path = machine_model_step("cpu", tmp_path)
    assert step.out == path and path.parent == tmp_path / "host" and step.passes is None and step.pool_with is None
    _, first, _ = machine_model_step("cpu", tmp_path, window=1)
    _, second, same = machine_model_step("cpu", tmp_path, window=2)
    assert same == path and first.out == tmp_path / "host" / f"{path.stem}-window1.yaml"
    assert second.out == path and second.pool_with == samples_path(first.out)
    assert first.pool_with is None and first.passes == second.passes == 3
    assert machine_model_step("cuda", tmp_path)[1:] == (None, GPU_MODEL) and GPU_MODEL.exists()
    assert machine_model_step("numpy", tmp_path) is None


def test_the_graph_is_the_one_the_training_config_trains(tmp_path, capsys):
    """--numerics-from builds the simulated and probed graph with the config's update rule and loss,
    so a shadow-weight run is priced with the shadow update's curve."""
    from hwmodels.host import curve_key
    from nitisim.calibrate.kernels import needed_curves
    from nitisim.contract.graph import NumericsOptions, build_graph
    from nitisim.contract.models import builtin_models
    from nitisim.train.config import load_config, numerics_of

    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "fashion-lenet.yaml"
    assert numerics_of(None) == NumericsOptions() and numerics_of(config) == load_config(config).numerics
    graph = build_graph(builtin_models()["lenet"], 2, numerics_of(config))
    rules = {n.attr("rule") for n in graph.nodes if n.op == "update"}
    assert rules == {load_config(config).numerics.update_rule}
    assert {f"update_{rule}_int32" for rule in rules} <= set(needed_curves(graph))
    assert all(curve_key(graph, n)[0].startswith("update_") for n in graph.nodes if n.op == "update")
    assert main(["calibrate", "--out", str(tmp_path / "h.yaml"), "--numerics-from", str(config)]) == 2
    assert "give --model and --batch too" in capsys.readouterr().err
    assert main(["simulate", "edge-16x16", "--model", "lenet", "--batch", "2", "--numerics-from",
                 str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2


def test_run_on_the_c_backend_simulates_the_calibrated_host_and_reports_residuals(tmp_path, capsys):
    import json

    out = tmp_path / "out"
    assert main(["run", "--tiny", "--backend", "cpu", "--accelerators", "edge-16x16", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    models = sorted((out / "host").glob("*.yaml"), key=lambda m: len(m.name))  # pooled, then first window
    assert [m.stem for m in models] == [models[0].stem, models[0].stem + "-window1"]
    assert load_accelerator(models[0]).host is not None and load_accelerator(models[1]).host is not None
    assert "--pool-with" in yaml.safe_load(models[0].read_text())["calibration"]["command"]
    pooled, first = (read_samples(samples_path(m)) for m in models)
    assert pooled.keys() == first.keys() and all(set(first[k]) <= set(pooled[k]) for k in first)
    assert all(len(pooled[k]) > len(first[k]) for k in first)  # the second window's calls added
    assert (out / "sims" / models[0].stem / "summary.json").exists()
    assert not (out / "sims" / models[1].stem).exists()  # only the pooled model is simulated
    doc = json.loads((out / "compare.json").read_text())
    (pred,) = doc["predictions"]
    assert pred["machine_model"] == load_accelerator(models[0]).name and len(pred["residuals"]) > 5
    assert [a["label"] for a in doc["accelerators"]] == ["edge-16x16", pred["machine_model"]]
    assert "measured vs predicted on the machine model" in stdout


@pytest.mark.parametrize("content, field", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('{"version": 2, "samples": {"k": [1e-3]}}', "version"),
    ('{"version": 1, "samples": {}}', "samples"),
    ('{"version": 1, "samples": {"relu@4096": [1e-3, -1]}}', "samples.relu@4096"),
    ('{"version": 1, "samples": {"relu@4096": [1e-3]}}', "differ from this calibration"),  # not these probes
])
def test_pool_with_a_bad_samples_file_is_one_line_and_exit_2(tmp_path, capsys, content, field):
    bad = tmp_path / "w.samples.json"
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "h.yaml"
    assert main(["calibrate", "--out", str(out), "--passes", "1", "--repeats", "1", "--model", "lenet", "--batch", "2",
                 "--pool-with", str(bad)]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_run_flags_a_busy_machine(tmp_path, capsys, monkeypatch):
    import nitisim.run_cli as run_cli

    monkeypatch.setattr(run_cli.os, "getloadavg", lambda: (1.7, 1.0, 0.5))
    assert main(["run", "--tiny", "--accelerators", "edge-16x16", "--out", str(tmp_path / "out")]) == 0
    assert "note: load average 1.70 when the run started" in capsys.readouterr().out


def test_each_probe_rewrites_the_input_the_step_has_just_produced():
    """In a training step a node's error (backward) or activation (forward) was just written by the
    node before it, so its probe writes that input again after evicting the caches."""
    from nitisim.calibrate.kernels import _fresh_input
    from nitisim.contract.graph import build_graph
    from nitisim.contract.models import builtin_models

    graph = build_graph(builtin_models()["lenet"], 2)
    fresh = {(n.op, n.inputs[_fresh_input(graph, n)]) for n in graph.nodes
             if n.op in ("conv2d", "maxpool", "maxpool_grad", "conv2d_weight_grad", "loss_grad")}
    assert ("conv2d", "x") in fresh and ("maxpool", "relu1.out") in fresh and ("loss_grad", "fc2.out") in fresh
    assert ("maxpool_grad", "pool1.out.grad") in fresh and ("conv2d_weight_grad", "conv1.out.grad") in fresh


def test_each_rate_probe_keeps_its_median_over_the_passes():
    from nitisim.calibrate.probes import Probe, _median_probes

    passes = [[Probe("gemm", rate, "MAC/s", "a GEMM", seconds=1 / rate, repeats=3), Probe("l2_cache", 2.0, "bytes", "sysfs")]
              for rate in (10.0, 2.0, 9.0)]  # the second pass ran in a slow spell
    gemm, l2 = _median_probes(passes)
    assert (gemm.value, gemm.seconds, gemm.repeats) == (9.0, 1 / 9.0, 9) and (l2.value, l2.seconds, l2.repeats) == (2.0, None, None)


def test_kernel_probes_pool_the_calls_of_all_passes_and_keep_their_lower_quartile():
    from nitisim.calibrate.kernels import kernel_time
    from nitisim.calibrate.probes import _pooled_times

    # three passes of 3 calls of one kernel: two in slow spells (2x), one uncontended
    passes = [[kernel_time("k", [2.0, 2.1, 2.2])], [kernel_time("k", [1.0, 1.1, 1.2])], [kernel_time("k", [2.0, 1.9, 2.1])]]
    assert passes[0][0].seconds == 2.05 and passes[0][0].repeats == 3  # each pass: its own lower quartile
    (pooled,) = _pooled_times(passes)
    # 9 calls sorted: 1.0 1.1 1.2 1.9 2.0 ... -> the 25th percentile at index 2: 1.2; the median of
    # the per-pass values would have been 2.0, the slow spells' speed
    assert (pooled.key, pooled.repeats, pooled.seconds) == ("k", 9, 1.2)
    assert sorted(pooled.samples) == sorted(s for p in passes for s in p[0].samples)



def test_the_evictor_runs_on_the_librarys_threads_when_it_can():
    from nitisim.calibrate.probes import l2_evictor

    class FakeLib:
        def __init__(self):
            self.seen = []

        def num_threads(self):
            return 2

        def rewrite_parallel(self, a):
            self.seen.append(a.nbytes)

    lib = FakeLib()
    l2_evictor(1000, lib)()
    assert lib.seen == [2 * 1000 * 2]  # 2 x L2 bytes for each of the library's threads
    assert l2_evictor(1000)() == 2 * 1000 // 8  # no library: a sum of ones read by this thread


def test_a_requantize_probe_times_each_call_on_the_fresh_output_of_its_gemm():
    import numpy as np

    from nitisim.calibrate.kernels import table_probes
    from nitisim.contract.graph import build_graph
    from nitisim.contract.models import builtin_models
    from nitisim.contract.numerics import QTensor

    graph = build_graph(builtin_models()["mlp"], 4)
    calls = {"linear": 0, "evict": 0}
    seen = []

    def linear(node, ctx, x, w):
        calls["linear"] += 1
        return (QTensor(np.full((x.m.shape[0], w.m.shape[0]), calls["linear"], np.int32), 0),)

    def requantize(node, ctx, acc):
        seen.append((node.name, int(acc.m[0, 0]), calls["evict"]))
        return (QTensor(np.zeros(acc.m.shape, np.int8), 0),)

    def other(node, ctx, *ins):
        return (ins[0],)

    kernels = {op: other for op in {n.op for n in graph.nodes}} | {"linear": linear, "requantize": requantize}
    times = table_probes(kernels, graph, 3, np.random.default_rng(0), before=lambda: calls.__setitem__("evict", calls["evict"] + 1))
    first = graph.nodes_of("requantize")[0]
    probe = [s for s in seen if s[0] == first.name]
    # a warm-up call, then 3 timed ones, each on the output of a new call of its linear, made after the eviction
    assert len(probe) == 4 and len({v for _, v, _ in probe}) == 4
    assert all(evicted > 0 for _, _, evicted in probe[1:])
    assert any(t.key.startswith("requantize int32[4x") for t in times)
