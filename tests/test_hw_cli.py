"""`nitisim simulate`: writes summary.json (the schema other tools read), report.md and a trace."""
from __future__ import annotations

import json

import yaml

from nitisim.cli import main as nitisim_main
from nitisim.contract.ops import REPORT_PHASES

LAYER_FIELDS = ("name", "phase", "macs", "cycles", "compute_cycles", "stall_cycles", "energy_pj",
                "sram_read_bytes", "sram_write_bytes", "dram_read_bytes", "dram_write_bytes")


def run(tmp_path, capsys, *extra, model="lenet"):
    out = tmp_path / "sim"
    assert nitisim_main(["simulate", "edge-16x16", "--model", model, "--batch", "2", "--out", str(out), *extra]) == 0
    capsys.readouterr()
    return out, json.loads((out / "summary.json").read_text())


def test_summary_json_schema(tmp_path, capsys):
    out, doc = run(tmp_path, capsys, "--trace")
    assert doc["schema"] == "nitisim.simulate/1" and doc["model"] == "lenet" and doc["batch"] == 2
    assert doc["arch"]["name"] == "edge-16x16" and doc["arch"]["clock_mhz"] == 500
    assert all(e["source"] for e in doc["arch"]["energy"].values())
    assert doc["layers"] and {r["phase"] for r in doc["layers"]} == set(REPORT_PHASES)
    for row in doc["layers"]:
        for key in LAYER_FIELDS:
            assert key in row, key
        assert row["cycles"] == row["compute_cycles"] + row["stall_cycles"]
    total = doc["total"]
    for key in LAYER_FIELDS[2:] + ("peak_storage_bytes", "activation_stash_bytes", "dram_spill_bytes"):
        assert isinstance(total[key], (int, float)) and total[key] >= 0, key
    assert total["macs"] == sum(r["macs"] for r in doc["layers"])
    assert total["energy_pj"] == sum(total["energy_by_component_pj"].values())
    cmp = doc["int8_vs_fp32"]
    assert cmp["energy_ratio"] > 1 and cmp["peak_storage_ratio"] > 1
    assert cmp["fp32"]["energy_pj"] == doc["fp32"]["total"]["energy_pj"]
    assert {n["name"] for n in doc["nodes"]} >= {"conv1.fwd", "loss.grad", "fc2.update"}
    gemm = next(n for n in doc["nodes"] if n["name"] == "conv2.fwd")["gemm"]
    assert (gemm["m"], gemm["k"], gemm["n"]) == (2 * 8 * 8, 5 * 5 * 20, 50)
    report = (out / "report.md").read_text()
    assert "float32 / int8" in report and "| conv1 | forward |" in report
    trace = json.loads((out / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert spans and all(e["dur"] > 0 and e["ts"] >= 0 for e in spans)
    assert {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"} >= {"MAC array", "DRAM"}


def test_phases_select_nodes(tmp_path, capsys):
    _, doc = run(tmp_path, capsys, "--phases", "forward")
    assert doc["phases"] == ["forward"] and {r["phase"] for r in doc["layers"]} == {"forward", "vector"}
    assert "trace.json" not in [p.name for p in (tmp_path / "sim").iterdir()]


def test_compat_and_model_yaml(tmp_path, capsys):
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump({"name": "tiny", "input": [6, 6, 2], "classes": 4,
                                     "layers": [{"conv": {"out": 3, "kernel": 3, "padding": 1}}, "relu", "flatten",
                                                {"linear": {"out": 4}}]}))
    _, doc = run(tmp_path, capsys, "--compat", "scalesim", model=str(model))
    assert doc["model"] == "tiny" and doc["compat"] == "scalesim"
    fwd = next(r for r in doc["nodes"] if r["name"] == "conv1.fwd")
    # ws 16x16: folds ceil(18/16) * ceil(3/16) = 2, cycles per fold 2*16 + 16 + 72 - 2 = 118, minus 1
    assert fwd["compute_cycles"] == 2 * 118 - 1
    # the layer's forward row adds the requantize reading the conv's output (it counts with its GEMM)
    row = next(r for r in doc["layers"] if r["name"] == "conv1" and r["phase"] == "forward")
    requant = next(r for r in doc["nodes"] if r["name"] == "conv1.requant")
    assert row["compute_cycles"] == fwd["compute_cycles"] + requant["compute_cycles"]


def test_default_out_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert nitisim_main(["simulate", "edge-16x16", "--model", "mlp", "--batch", "1"]) == 0
    assert (tmp_path / "nitisim-out" / "sim-edge-16x16-mlp" / "summary.json").exists()
    assert "wrote" in capsys.readouterr().out


def test_simulate_report_of_a_deep_graph_keeps_its_largest_layer_rows(tmp_path):
    """resnet-50 has about 280 (layer, phase) rows: report.md keeps the 40 with the most cycles and sums
    the rest in one row, so the cycles still add up to the total; lenet's 21 rows stay whole."""
    import json

    from nitisim.cli import main as cli_main

    for model in ("resnet-50", "lenet"):
        assert cli_main(["simulate", "edge-16x16", "--model", model, "--batch", "2", "--out", str(tmp_path / model)]) == 0
    doc = json.loads((tmp_path / "resnet-50" / "summary.json").read_text())
    md = (tmp_path / "resnet-50" / "report.md").read_text()
    section = md.split("## By layer and phase")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert len(doc["layers"]) > 200 and len(rows) == 41 and rows[-1].startswith(f"| other {len(doc['layers']) - 40} rows")
    assert sum(int(r.split("|")[4].replace(",", "")) for r in rows) == sum(r["cycles"] for r in doc["layers"])
    small = (tmp_path / "lenet" / "report.md").read_text().split("## By layer and phase")[1].split("\n## ")[0]
    assert "other" not in small
    assert len([x for x in small.splitlines() if x.startswith("| ") and not x.startswith("| layer")]) == len(
        json.loads((tmp_path / "lenet" / "summary.json").read_text())["layers"])
