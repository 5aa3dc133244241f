"""`nitisim sweep` on tiny grids: local processes, inline, a real Dask cluster, and bad grids."""
import copy
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from hwmodels.sweep import OBJECTIVES, PointTask, expand, load_grid, mark_pareto, run_point
from nitisim.sweep_cli import run_local
from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.contract.models import builtin_models

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 2 arrays x 2 dataflows x 2 SRAM sizes = 8 points; the 64x64 array cannot tile into 4 KiB buffers.
TINY_GRID = """
name: tiny
base: edge-16x16
model: mlp
batch: 8
parameters:
  array: [8x8, [64, 64]]
  dataflow: [ws, os]
  sram_kib: [4, 64]
"""


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_GRID)
    return path


def _check_outputs(out):
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 8
    assert [int(r["index"]) for r in rows] == list(range(8))
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["grid"]["parameters"]["dataflow"] == ["ws", "os"]
    points = doc["points"]
    ok = [p for p in points if p["status"] == "ok"]
    bad = [p for p in points if p["status"] == "infeasible"]
    assert ok and bad  # 64x64 with 4 KiB buffers cannot tile; the rest can
    assert all(p["rows"] == 64 and p["sram_kib"] == 4 and "buffers." in p["reason"] for p in bad)
    assert all(p["cycles"] > 0 and p["energy_pj"] > 0 and p["area_mm2"] > 0 for p in ok)
    front = [p for p in ok if p["pareto"]]
    assert front and not any(p["pareto"] or p["pareto_latency_energy"] for p in bad)
    for column, keys in (("pareto", OBJECTIVES), ("pareto_latency_energy", OBJECTIVES[:2])):
        for p in ok:  # a front point: nothing feasible is as good in every objective and better in one
            beaten = any(all(q[k] <= p[k] for k in keys) and any(q[k] < p[k] for k in keys) for q in ok)
            assert p[column] == (not beaten), (column, p["label"])
    assert (out / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE
    assert ET.parse(out / "pareto.svg").getroot().tag.endswith("svg")
    return points


def test_expand_is_the_cartesian_product_through_the_simulators_loader(grid):
    g = load_grid(grid)
    tasks = expand(g)
    assert g.size == len(tasks) == 8
    doc = json.loads(tasks[-1].doc_json)
    assert (doc["array"]["rows"], doc["array"]["cols"], doc["array"]["dataflow"]) == (64, 64, "os")
    assert all(doc["buffers"][b]["kib"] == 64 and "bytes" not in doc["buffers"][b] for b in ("ifmap", "filter", "ofmap"))
    assert len({t.label for t in tasks}) == 8


def test_sweep_in_local_processes_matches_inline(grid, tmp_path):
    assert main(["sweep", str(grid), "--workers", "2", "--out", str(tmp_path / "pool")]) == 0
    assert main(["sweep", str(grid), "--workers", "1", "--out", str(tmp_path / "inline")]) == 0
    assert _check_outputs(tmp_path / "pool") == _check_outputs(tmp_path / "inline")


def test_sweep_on_a_dask_cluster(grid, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        assert main(["sweep", str(grid), "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "d")]) == 0
    points = _check_outputs(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "sweep.json").read_text())["executor"].startswith("dask tcp://")
    assert main(["sweep", str(grid), "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    assert points == _check_outputs(tmp_path / "local")


@pytest.mark.parametrize("edit, field", [
    ("parameters:\n  array: [8x8]\n  bogus: [1]", "parameters.bogus"),
    ("parameters:\n  dataflow: [ws, diagonal]", "parameters.dataflow[1]"),
    ("parameters:\n  sram_kib: []", "parameters.sram_kib"),
    ("parameters:\n  sram_kib: [4, 4]", "parameters.sram_kib"),
    ("parameters:\n  sram_kib: [4]\n  ifmap_kib: [8]", "parameters.ifmap_kib"),
    ("parameters:\n  array: [8by8]", "parameters.array[0]"),
    ("parameters:\n  dram_bandwidth_bytes_per_cycle: [-1]", "parameters.dram_bandwidth_bytes_per_cycle[0]"),
    ("parameters:\n  node_nm: [45, 3]", "parameters.node_nm[1]"),
    ("parameters:\n  node_nm: [.nan]", "parameters.node_nm[0]"),
    ("parameters:\n  node_nm: [28nm]", "parameters.node_nm[0]"),
    ("max_area_mm2: big\nparameters:\n  array: [8x8]", "max_area_mm2"),
    ("max_area_mm2: .inf\nparameters:\n  array: [8x8]", "max_area_mm2"),
    ("max_area_mm2: -2\nparameters:\n  array: [8x8]", "max_area_mm2"),
])
def test_bad_grid_values_name_the_key(tmp_path, edit, field):
    head = TINY_GRID.split("parameters:")[0]
    path = tmp_path / "bad.yaml"
    path.write_text(head + edit + "\n")
    with pytest.raises(UserInputError) as err:
        load_grid(path)
    assert err.value.field == field


def test_node_past_the_float_range_names_the_key(tmp_path):
    """node_nm: an integer too large for a float is refused naming the key, not an OverflowError."""
    test_bad_grid_values_name_the_key(tmp_path, "parameters:\n  node_nm: [1" + "0" * 400 + "]",
                                      "parameters.node_nm[0]")


def test_bad_grid_is_one_line_and_exit_2(capsys, tmp_path, grid):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_GRID.replace("batch: 8", "batch: 8\nspeed: fast"))
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.yaml: speed: unknown key" in err
    bad.write_text(TINY_GRID.replace("edge-16x16", "no-such-chip"))
    assert main(["sweep", str(bad)]) == 2
    assert "base" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["sweep", str(grid), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_unreachable_scheduler_is_a_user_error(capsys, grid, tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["sweep", str(grid), "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "x")]) == 2
        assert "--scheduler" in capsys.readouterr().err


def test_shipped_example_grid_parses():
    g = load_grid(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "example.yaml")
    assert g.size == len(expand(g)) == 24


def test_every_parameter_reaches_the_accelerator_spec(tmp_path):
    from hwmodels.config import parse_accelerator

    path = tmp_path / "all.yaml"
    path.write_text(TINY_GRID.split("parameters:")[0] + """parameters:
  rows: [8]
  cols: [4]
  dataflow: [is]
  ifmap_kib: [16]
  filter_kib: [32]
  ofmap_kib: [64]
  dram_bandwidth_gb_s: [6.4]
  clock_mhz: [400]
  vector_lanes: [8]
  node_nm: [28]
""")
    (task,) = expand(load_grid(path))
    arch = parse_accelerator(json.loads(task.doc_json), task.source)
    assert (arch.array.rows, arch.array.cols, arch.array.dataflow) == (8, 4, "is")
    assert (arch.ifmap.size_bytes, arch.filter.size_bytes, arch.ofmap.size_bytes) == (16384, 32768, 65536)
    assert arch.dram.bandwidth_bytes_per_cycle == pytest.approx(6.4e3 / 400)
    assert (arch.clock_mhz, arch.vector.lanes, arch.node_nm) == (400, 8, 28)


def test_a_design_point_can_be_dominated_on_area_alone():
    """Two designs with the same cycles and energy: the base, and the base with its ifmap SRAM doubled
    by a second bank of the same size (same energy per access, capacity this model never needs).
    Without area neither beats the other; with area the bigger one is dominated."""
    from hwmodels.config import CONFIG_DIR

    base = yaml.safe_load((CONFIG_DIR / "edge-16x16.yaml").read_text())
    bigger = copy.deepcopy(base)
    bigger["buffers"]["ifmap"].update(kib=128, banks=2)
    mlp = builtin_models()["mlp"]
    rows = [run_point(PointTask(i, label, (), json.dumps(doc), f"test point {i}", mlp, 8))
            for i, (label, doc) in enumerate((("base", base), ("two ifmap banks", bigger)))]
    small, big = rows
    assert (small["cycles"], small["energy_pj"]) == (big["cycles"], big["energy_pj"])
    assert big["area_mm2"] > small["area_mm2"]
    marked = mark_pareto(rows)
    assert [r["pareto_latency_energy"] for r in marked] == [True, True]
    assert [r["pareto"] for r in marked] == [True, False]


def test_the_example_sweeps_front_changes_once_area_counts_and_its_cap_holds():
    """The shipped example: without area the biggest feasible array wins alone; with area the
    smaller arrays, cheaper in silicon, join the front; points over max_area_mm2 are infeasible
    with the reason and were not simulated."""
    grid = load_grid(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "example.yaml")
    results = mark_pareto(run_local(expand(grid), 1, lambda done, total: None))
    ok = [r for r in results if r["status"] == "ok"]
    capped = [r for r in results if r["status"] == "infeasible"]
    assert capped and all(r["reason"].startswith("max_area_mm2: area ") and r["area_mm2"] > grid.max_area_mm2
                          and r["cycles"] is None for r in capped)
    assert all(r["area_mm2"] <= grid.max_area_mm2 for r in ok)
    front = {r["label"] for r in ok if r["pareto"]}
    front_2d = {r["label"] for r in ok if r["pareto_latency_energy"]}
    assert front_2d < front  # area adds members: designs slower but smaller than every faster one
    for r in ok:
        if r["label"] in front - front_2d:
            assert all(q["area_mm2"] > r["area_mm2"] for q in ok if q["label"] in front_2d)
