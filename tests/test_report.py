"""`nitisim compare` on a real tiny training run (synthetic data) and simulation folders.

The run comes from the real `nitisim train`, one simulation from the real `nitisim simulate`; two
more are written here in the documented summary.json schema with made-up costs, so the report's
numbers can be checked against known inputs.
"""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nitisim.cli import main
from nitisim.report.runs import load_run
from nitisim.contract.errors import UserInputError
from nitisim.contract.graph import build_graph, node_macs
from nitisim.contract.models import builtin_models
from nitisim.contract.ops import report_phase

TINY_RUN = """
model: mlp
dataset: synthetic
synthetic: {train: 128, test: 64}
batch: 32
epochs: 2
mu_schedule: [{from_epoch: 0, mu: 2}]
seed: 1
eval_batch: 64
fp32: {lr: 0.05, momentum: 0.9, weight_decay: 0.0, lr_schedule: {kind: constant}}
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_sim(folder: Path, name: str, macs_per_cycle: int, batch: int = 32, model: str = "mlp",
              with_nodes: bool = True, requantize_as_vector: bool = False) -> Path:
    """A simulation folder in the documented schema: cycles = MACs / array size + a vector cost;
    layer rows grouped as the simulator groups them (nitisim.contract.ops.report_phase: a requantize
    with its GEMM; `requantize_as_vector`: as summaries of earlier versions did), and node rows."""
    graph = build_graph(builtin_models()[model], batch)
    rows: dict[tuple[str, str], dict] = {}
    nodes = []
    for node in graph.nodes:
        if node.kind == "view":  # as the simulator: reshapes cost nothing and get no row
            continue
        macs = node_macs(graph, node)
        cycles = macs // macs_per_cycle + 16
        cost = {"macs": macs, "cycles": cycles + 4, "compute_cycles": cycles, "stall_cycles": 4,
                "energy_pj": 0.3 * macs + 2.0, "sram_read_bytes": 0, "sram_write_bytes": 0, "dram_read_bytes": 64,
                "dram_write_bytes": 0}
        nodes.append({"name": node.name, "op": node.op, "kind": node.kind, "layer": node.layer,
                      "graph_phase": node.phase, **cost})
        phase = "vector" if requantize_as_vector and node.op == "requantize" else report_phase(node.op, node.phase)
        key = (node.layer, phase)
        row = rows.setdefault(key, {"name": key[0], "phase": key[1], **{k: 0 for k in cost}})
        for k, v in cost.items():
            row[k] += v
    layers = list(rows.values())
    total = {k: sum(r[k] for r in layers) for k in layers[0] if k not in ("name", "phase")}
    total["peak_storage_bytes"] = 4096
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "arch": {"name": name, "clock_mhz": 500}, "model": model, "batch": batch, "layers": layers, "total": total,
        **({"nodes": nodes} if with_nodes else {}),
        "comparison": {"int8": {"energy_pj": total["energy_pj"]}, "fp32": {"energy_pj": 4 * total["energy_pj"]}},
    }))
    (folder / "report.md").write_text(f"# {name}\n")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny integer run and its float32 twin, named by the <name>-int8 / <name>-fp32 convention."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text(TINY_RUN)
    assert main(["train", str(config), "--backend", "numpy", "--out", str(root / "tiny-int8")]) == 0
    assert main(["train", str(config), "--arith", "fp32", "--device", "cpu", "--out", str(root / "tiny-fp32")]) == 0
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    sims = tmp_path_factory.mktemp("sims")
    a = write_sim(sims / "small", "small-8x8", 64)
    b = write_sim(sims / "big", "big-32x32", 1024)
    real = sims / "edge"
    assert main(["simulate", "edge-16x16", "--model", "mlp", "--batch", "32", "--out", str(real)]) == 0
    out = tmp_path_factory.mktemp("report")
    assert main(["compare", str(runs / "tiny-int8"), str(a), str(b), str(real), "--out", str(out)]) == 0
    return out


def test_report_files_exist_and_plots_are_valid_svg(report):
    for name in ("report.html", "report.md", "compare.json"):
        assert (report / name).stat().st_size > 0
    svgs = sorted((report / "plots").glob("*.svg"))
    names = {p.stem for p in svgs}
    assert {"training_curves", "measured_stacked", "cycles_stacked_0", "cycles_stacked_1", "energy", "agreement",
            "storage"} <= names
    for p in svgs:
        assert ET.parse(p).getroot().tag.endswith("svg")


def test_html_is_self_contained_with_every_plot_inline(report):
    text = (report / "report.html").read_text()
    assert text.count("<svg") >= 7
    assert "src=\"http" not in text and "<script" not in text and "<link" not in text
    # Each inline SVG must parse as XML on its own (ids salted per figure, so they do not collide).
    for chunk in text.split("<svg")[1:]:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")


def test_tables_hold_the_numbers_of_summary_and_metrics(runs, report):
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for arith in ("int8", "fp32"):
        summary = json.loads((runs / f"tiny-{arith}" / "summary.json").read_text())
        final = f"{100 * summary['final_test_accuracy']:.2f}"
        assert f"| {arith} | {summary['backend']} | 2 | {final} |" in md
        assert f"{summary['images_per_second']:,.1f}" in md
        metrics = [json.loads(s) for s in (runs / f"tiny-{arith}" / "metrics.jsonl").read_text().splitlines()]
        for m in metrics:
            assert f"{100 * m['train_accuracy']:.2f}" in md and f"{100 * m['test_accuracy']:.2f}" in md
    assert "small-8x8" in html and "big-32x32" in html


def test_compare_json_numbers(runs, report):
    doc = json.loads((report / "compare.json").read_text())
    summary = json.loads((runs / "tiny-int8" / "summary.json").read_text())
    assert doc["run"]["final_test_accuracy"] == summary["final_test_accuracy"]
    assert doc["fp32_twin"]["arith"] == "fp32"  # found by the -int8 / -fp32 naming convention
    assert [a["label"] for a in doc["accelerators"]] == ["small-8x8", "big-32x32", "edge-16x16"]
    sim = json.loads((Path(doc["accelerators"][0]["path"]) / "summary.json").read_text())
    assert doc["accelerators"][0]["total"]["cycles"] == sim["total"]["cycles"]
    assert doc["accelerators"][0]["clock_hz"] == 500e6
    edge = doc["accelerators"][2]  # the real simulator's folder: its float32 twin is read too
    assert edge["fp32_total"]["energy_pj"] > edge["total"]["energy_pj"] > 0
    assert sum(edge["energy_pj_by_component"].values()) == pytest.approx(edge["total"]["energy_pj"])
    assert not doc["agreement"][2]["only_measured"] and not doc["agreement"][2]["only_simulated"]
    agree = doc["agreement"][0]
    assert agree["fit"]["points"] == len(agree["points"]) > 5
    assert -1 <= agree["spearman_points"] <= 1 and agree["fit"]["r2"] <= 1
    # The measured side is timing.json's lower-quartile call of each node summed by (layer, report phase).
    timing = json.loads((runs / "tiny-int8" / "timing.json").read_text())["nodes"]
    fc1_forward = sum(v["quartile_seconds"] for v in timing.values()
                      if v["layer"] == "fc1" and report_phase(v["op"], v["phase"]) == "forward")
    point = next(p for p in agree["points"] if (p["layer"], p["phase"]) == ("fc1", "forward"))
    assert point["seconds"] == pytest.approx(fc1_forward)
    rows = {r["category"]: r for r in doc["storage"]["rows"]}
    weights = 784 * 256 + 256 * 128 + 128 * 10
    assert rows["weights"]["int8_bytes"] == weights and rows["weights"]["fp32_bytes"] == 4 * weights


def test_explicit_fp32_twin_without_simulations(runs, tmp_path):
    copy = tmp_path / "elsewhere"
    assert main(["compare", str(runs / "tiny-int8"), "--fp32", str(runs / "tiny-fp32"), "--out", str(copy)]) == 0
    doc = json.loads((copy / "compare.json").read_text())
    assert doc["fp32_twin"]["path"] == str(runs / "tiny-fp32")
    assert doc["accelerators"] == [] and doc["agreement"] == []


def test_plots_write_valid_png(tmp_path):
    from nitisim.report import plots

    fig = plots.storage_bars(["weights"], [10], [40])
    plots.save(fig, tmp_path / "s.png", "s")
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------------------------
# Bad inputs: exit 2 and one line naming the file and the problem
# ------------------------------------------------------------------------------------------------
def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("nitisim: error: ")
    return err


def test_missing_run_dir(capsys, tmp_path):
    err = _one_line_error(capsys, ["compare", str(tmp_path / "nope")])
    assert "nope" in err and "no such directory" in err


def test_corrupt_summary(capsys, runs, tmp_path):
    bad = tmp_path / "bad-int8"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text((runs / "tiny-int8" / "metrics.jsonl").read_text())
    (bad / "summary.json").write_text('{"arith": "int8", ')
    err = _one_line_error(capsys, ["compare", str(bad)])
    assert "summary.json" in err and "malformed JSON" in err


def test_summary_missing_field_is_named(capsys, runs, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text((runs / "tiny-int8" / "metrics.jsonl").read_text())
    summary = json.loads((runs / "tiny-int8" / "summary.json").read_text())
    del summary["total_seconds"]
    (bad / "summary.json").write_text(json.dumps(summary))
    err = _one_line_error(capsys, ["compare", str(bad)])
    assert "summary.json: total_seconds: missing required field" in err


def test_bad_metrics_line_is_named(capsys, runs, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text((runs / "tiny-int8" / "summary.json").read_text())
    (bad / "metrics.jsonl").write_text('{"epoch": 0, "train_accuracy": 1.5, "test_accuracy": 0.5, '
                                       '"seconds": 1, "images_per_second": 3}\n')
    err = _one_line_error(capsys, ["compare", str(bad)])
    assert "metrics.jsonl: line 1.train_accuracy: must be a fraction" in err


def test_bad_metrics_line_after_a_blank_line_is_named_by_its_line_in_the_file(capsys, runs, tmp_path):
    """Blank lines are skipped, yet the error names the line of the file, not the count of metric lines."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text((runs / "tiny-int8" / "summary.json").read_text())
    (bad / "metrics.jsonl").write_text('\n\n{"epoch": 0, "train_accuracy": 1.5, "test_accuracy": 0.5, '
                                       '"seconds": 1, "images_per_second": 3}\n')
    err = _one_line_error(capsys, ["compare", str(bad)])
    assert "metrics.jsonl: line 3.train_accuracy: must be a fraction" in err


def test_a_torn_last_metrics_line_is_read_as_resume_reads_it(capsys, runs, tmp_path):
    """A run killed in the middle of appending its metrics line compares like the epochs it finished."""
    torn = tmp_path / "torn-int8"
    torn.mkdir()
    (torn / "summary.json").write_text((runs / "tiny-int8" / "summary.json").read_text())
    whole = (runs / "tiny-int8" / "metrics.jsonl").read_text()
    (torn / "metrics.jsonl").write_text(whole + '{"epoch": 9, "train_acc')
    assert main(["compare", str(torn), "--out", str(tmp_path / "r")]) == 0
    assert load_run(torn).epochs == load_run(runs / "tiny-int8").epochs  # the torn epoch 9 is not among them
    (torn / "metrics.jsonl").write_text('{"epoch": 0, "train_acc\n' + whole)  # torn, then more: not a kill
    err = _one_line_error(capsys, ["compare", str(torn)])
    assert "metrics.jsonl: line 1: is not JSON" in err


def test_bad_sim_folder(capsys, runs, tmp_path):
    sim = write_sim(tmp_path / "sim", "x", 64)
    doc = json.loads((sim / "summary.json").read_text())
    doc["layers"][1]["phase"] = "sideways"
    (sim / "summary.json").write_text(json.dumps(doc))
    err = _one_line_error(capsys, ["compare", str(runs / "tiny-int8"), str(sim)])
    assert "layers[1].phase" in err
    err = _one_line_error(capsys, ["compare", str(runs / "tiny-int8"), str(tmp_path / "missing-sim")])
    assert "missing-sim" in err


def test_mismatched_simulation_is_noted(runs, tmp_path, capsys):
    sim = write_sim(tmp_path / "sim", "other", 64, batch=16, model="lenet")
    assert main(["compare", str(runs / "tiny-int8"), str(sim), "--out", str(tmp_path / "r")]) == 0
    notes = json.loads((tmp_path / "r" / "compare.json").read_text())["notes"]
    assert any("simulated model lenet is not the run's model mlp" in n for n in notes)
    assert any("simulated batch 16 differs from the run's batch 32" in n for n in notes)
    assert "Notes" in (tmp_path / "r" / "report.html").read_text()


def test_missing_explicit_twin(capsys, runs, tmp_path):
    err = _one_line_error(capsys, ["compare", str(runs / "tiny-int8"), "--fp32", str(tmp_path / "none")])
    assert "none" in err


def test_machine_model_gets_measured_versus_predicted_residuals(runs, tmp_path):
    """A sim whose arch has a `host` section (a calibrated machine model) is read as a prediction:
    seconds = cycles / clock, residuals per (layer, phase), largest first."""
    folder = write_sim(tmp_path / "host", "host-test", 64)
    doc = json.loads((folder / "summary.json").read_text())
    doc["arch"]["host"] = {"engine": "test"}
    (folder / "summary.json").write_text(json.dumps(doc))
    out = tmp_path / "report"
    assert main(["compare", str(runs / "tiny-int8"), str(folder), "--out", str(out)]) == 0
    pred = json.loads((out / "compare.json").read_text())["predictions"]
    assert [p["machine_model"] for p in pred] == ["host-test"]
    rows = pred[0]["residuals"]
    cycles: dict[tuple[str, str], float] = {}  # the node rows, each requantize beside its GEMM
    for x in doc["nodes"]:
        key = (x["layer"], report_phase(x["op"], x["graph_phase"]))
        cycles[key] = cycles.get(key, 0) + x["cycles"]
    assert rows and all(r["predicted_seconds"] == pytest.approx(cycles[(r["layer"], r["phase"])] / 500e6)
                        for r in rows)
    sizes = [abs(r["residual_seconds"]) for r in rows]
    assert sizes == sorted(sizes, reverse=True)
    md = (out / "report.md").read_text()
    assert "Residuals on host-test, largest first" in md and "R^2 (prediction, no fit)" in md


def test_node_timer_keeps_each_nodes_median_and_lower_quartile_call():
    from nitisim.contract.graph import Node
    from nitisim.train.timing import NodeTimer

    timer = NodeTimer({"old": {"op": "relu", "layer": "r", "phase": "forward", "seconds": 2.0, "calls": 4}})
    node = Node("conv1.fwd", "conv2d", "forward", "conv1", ("x", "w"), ("y",))
    for seconds in (1.0, 9.0, 2.0):  # one step slowed by another process
        timer.observe(node, seconds)
    nodes = timer.nodes()
    assert nodes["conv1.fwd"]["seconds"] == 12.0 and nodes["conv1.fwd"]["median_seconds"] == 2.0
    assert nodes["conv1.fwd"]["quartile_seconds"] == 1.5  # halfway between the two lowest calls
    assert "median_seconds" not in nodes["old"] and "quartile_seconds" not in nodes["old"]  # a resumed run's earlier calls left only their sum


def test_measured_time_is_the_lower_quartile_call_else_the_median_else_the_mean():
    from nitisim.report.join import measured_by_phase
    from nitisim.report.runs import NodeTime

    timing = (NodeTime("c.fwd", "conv2d", "c", "forward", 12.0, 3, median_seconds=2.0, quartile_seconds=1.5),
              NodeTime("c.act", "relu", "c", "forward", 6.0, 3, median_seconds=1.8),  # a run before quartiles
              NodeTime("c.req", "requantize", "c", "forward", 3.0, 3),  # an older run: no median
              NodeTime("c.in_grad.req", "requantize", "c", "backward", 0.6, 3, quartile_seconds=0.1),
              NodeTime("flat", "flatten", "f", "forward", 1.0, 3))  # a view: left out
    by_quartile = {(m.layer, m.phase): m.seconds for m in measured_by_phase(timing)}
    by_median = {(m.layer, m.phase): m.seconds for m in measured_by_phase(timing, "median")}
    by_mean = {(m.layer, m.phase): m.seconds for m in measured_by_phase(timing, "mean")}
    # a requantize counts with the GEMM it follows: forward, or the input gradient on the backward pass
    assert by_quartile == {("c", "forward"): 2.5, ("c", "vector"): 1.8, ("c", "input_grad"): 0.1}
    assert by_median == {("c", "forward"): 3.0, ("c", "vector"): 1.8, ("c", "input_grad"): pytest.approx(0.2)}
    assert by_mean == {("c", "forward"): 5.0, ("c", "vector"): 2.0, ("c", "input_grad"): pytest.approx(0.2)}
    with pytest.raises(ValueError, match="statistic"):
        measured_by_phase(timing, "mode")


def test_negative_median_in_timing_is_named(capsys, runs, tmp_path):
    bad = tmp_path / "bad-int8"
    bad.mkdir()
    for f in (runs / "tiny-int8").iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    doc = json.loads((bad / "timing.json").read_text())
    name = next(iter(doc["nodes"]))
    doc["nodes"][name]["median_seconds"] = -1
    (bad / "timing.json").write_text(json.dumps(doc))
    assert main(["compare", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "timing.json" in err and f"nodes.{name}.median_seconds" in err and "Traceback" not in err


def test_sims_are_joined_by_node_with_each_requantize_beside_its_gemm(tmp_path):
    from nitisim.report.join import simulated_by_phase
    from nitisim.report.sims import load_sim

    def by_phase(folder):
        return {(p.layer, p.phase): p.cycles for p in simulated_by_phase(load_sim(folder))}

    by_node = by_phase(write_sim(tmp_path / "n", "n", 64))
    by_layer = by_phase(write_sim(tmp_path / "l", "l", 64, with_nodes=False))
    # one answer: the simulator's layer rows group a requantize with its GEMM, as the node rows do
    assert by_node == by_layer and ("fc2", "vector") not in by_node
    # a summary of an earlier version (layer rows with requantize as vector work) is read by its
    # node rows the same way; without node rows it keeps its own grouping
    assert by_phase(write_sim(tmp_path / "o", "o", 64, requantize_as_vector=True)) == by_node
    old = by_phase(write_sim(tmp_path / "p", "p", 64, with_nodes=False, requantize_as_vector=True))
    assert ("fc2", "vector") in old and by_node[("fc2", "forward")] > old[("fc2", "forward")]
    assert by_node[("fc2", "forward")] + by_node[("fc2", "input_grad")] == \
        old[("fc2", "forward")] + old[("fc2", "input_grad")] + old[("fc2", "vector")]
    assert sum(by_node.values()) == sum(old.values())


def test_sim_node_rows_are_checked(tmp_path):
    from nitisim.report.sims import load_sim

    folder = write_sim(tmp_path / "s", "s", 64)
    doc = json.loads((folder / "summary.json").read_text())
    del doc["nodes"][1]["graph_phase"]
    (folder / "summary.json").write_text(json.dumps(doc))
    with pytest.raises(UserInputError, match=r"nodes\[1\]\.graph_phase"):
        load_sim(folder)


def test_compare_shows_area_by_component_and_the_float32_twins(report):
    """The real simulation folder's area reaches the report: by component, its float32 twin, and
    the figures of merit, with the same numbers as its summary.json."""
    doc = json.loads((report / "compare.json").read_text())
    edge = doc["accelerators"][2]
    sim = json.loads((Path(edge["path"]) / "summary.json").read_text())
    assert edge["area_mm2_by_component"] == sim["total"]["area_by_component_mm2"]
    assert edge["node_nm"] == 45
    assert sum(edge["area_mm2_by_component"].values()) == pytest.approx(sim["total"]["area_mm2"])
    ratio = edge["fp32_area_mm2_by_component"]["mac_array"] / edge["area_mm2_by_component"]["mac_array"]
    assert ratio == pytest.approx((7700 + 4184) / (282 + 137))  # Horowitz's fp32 PE over the int8 PE
    md = (report / "report.md").read_text()
    assert "## Area" in md and "**Silicon area by component**" in md
    row = next(line for line in md.splitlines() if line.startswith("| edge-16x16 | 45 |"))
    assert f"| {sim['total']['area_mm2']:.4g} | {sim['fp32']['total']['area_mm2']:.4g} |" in row
    assert f"| {ratio:.4g} |" in row
    merit = next(line for line in md.splitlines() if line.startswith("| edge-16x16 | ") and "images" not in line
                 and f"{sim['total']['images_per_second_per_mm2']:.4g}" in line)
    assert f"{sim['total']['edap_j_s_mm2']:.4g}" in merit
    assert (report / "plots" / "area.svg").exists()
    assert "small-8x8" not in row  # made-up folders without area get no area row


def test_sim_area_that_is_not_a_number_is_one_line(capsys, runs, report, tmp_path):
    doc = json.loads((report / "compare.json").read_text())
    real = Path(doc["accelerators"][2]["path"])
    sim = tmp_path / "sim"
    sim.mkdir()
    summary = json.loads((real / "summary.json").read_text())
    summary["total"]["area_by_component_mm2"]["mac_array"] = "big"
    (sim / "summary.json").write_text(json.dumps(summary))
    err = _one_line_error(capsys, ["compare", str(runs / "tiny-int8"), str(sim)])
    assert "total.area_by_component_mm2.mac_array: must be a non-negative number" in err
    summary["total"]["area_by_component_mm2"]["mac_array"] = 1.0
    summary["fp32"]["total"]["area_mm2"] = float("nan")
    (sim / "summary.json").write_text(json.dumps(summary))
    err = _one_line_error(capsys, ["compare", str(runs / "tiny-int8"), str(sim)])
    assert "fp32.total.area_mm2: must be a non-negative number" in err


def test_a_resnet50_sized_report_keeps_tables_and_plots_short_and_a_small_one_whole(runs, tmp_path):
    """About 120 layers and 250 (layer, phase) points: every table and bar chart keeps its largest
    rows plus one summed row (totals unchanged), the full tables go to CSV, the scatter names at most
    MAX_POINT_LABELS points; the tiny MLP's tables are whole and write no CSV."""
    import csv
    from dataclasses import replace

    from nitisim.report import plots, top
    from nitisim.report.cli import build
    from nitisim.report.figures import figure_objects
    from nitisim.report.join import PhaseTime, agreement
    from nitisim.report.predict import predict
    from nitisim.report.tables import sections
    from nitisim.report.write import write_report

    sim_dir = write_sim(tmp_path / "sims" / "r50", "deep-32x32", 1024, model="resnet-50")
    small = build(runs / "tiny-int8", [])
    assert all(t.full is None for s in sections(small) for t in s.tables)
    c = build(runs / "tiny-int8", [sim_dir])
    sim = c.sims[0]
    measured = tuple(PhaseTime(p.layer, p.phase, p.cycles * 2e-9 * (1 + 0.1 * (i % 3))) for i, p in enumerate(sim.phases))
    c = replace(c, measured=measured, agreements=(agreement(sim.label, measured, sim.phases),),
                predictions=(predict(sim.label, measured, sim.phases, 5e8),))
    layers = len({p.layer for p in sim.phases})
    assert layers > 100 and len(sim.phases) > 200
    shortened = 0
    for section in sections(c):
        for t in section.tables:
            assert len(t.rows) <= top.MAX_ROWS + 2, t.title  # the kept rows, "other ...", total
            if t.full is not None:
                shortened += 1
                assert len(t.full.rows) > top.MAX_ROWS, t.title
    assert shortened == 4  # measured, simulated cycles, per-layer shares, residuals
    cycles = next(t for s in sections(c) for t in s.tables if t.title.startswith("Simulated cycles per layer"))
    assert cycles.rows[-2][0] == f"other {layers - top.SHOWN} layers"
    kept_and_other = sum(float(r[-2].replace(",", "")) for r in cycles.rows[:-1])
    assert kept_and_other == pytest.approx(float(cycles.rows[-1][-2].replace(",", "")), rel=1e-6)

    figs = figure_objects(c)
    for name in ("measured_stacked", "cycles_stacked_0"):
        ax = figs[name].axes[0]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) == top.SHOWN + 1 and labels[-1].startswith("other "), name
    annotations = [child for child in figs["agreement"].axes[0].texts]
    assert 0 < len(annotations) <= plots.MAX_POINT_LABELS

    out = write_report(c, tmp_path / "report")
    with open(out[f"table:{cycles.csv}"]) as f:
        assert len(list(csv.reader(f))) == 1 + layers + 1  # header, every layer, total
    assert len((tmp_path / "report" / "report.md").read_text().splitlines()) < 400
