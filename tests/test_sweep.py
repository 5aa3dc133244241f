"""`nitisim sweep` on tiny grids: local processes, inline, a real Dask cluster, and bad grids."""
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hwmodels.sweep import expand, load_grid
from nitisim.cli import main
from nitisim.errors import UserInputError

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
    assert all(p["cycles"] > 0 and p["energy_pj"] > 0 for p in ok)
    front = [p for p in ok if p["pareto"]]
    assert front and not any(p["pareto"] for p in bad)
    for p in ok:  # nothing feasible beats a front point in both objectives
        if p["pareto"]:
            assert not any(q["cycles"] <= p["cycles"] and q["energy_pj"] <= p["energy_pj"]
                           and (q["cycles"], q["energy_pj"]) != (p["cycles"], p["energy_pj"]) for q in ok)
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
])
def test_bad_grid_values_name_the_key(tmp_path, edit, field):
    head = TINY_GRID.split("parameters:")[0]
    path = tmp_path / "bad.yaml"
    path.write_text(head + edit + "\n")
    with pytest.raises(UserInputError) as err:
        load_grid(path)
    assert err.value.field == field


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
""")
    (task,) = expand(load_grid(path))
    arch = parse_accelerator(json.loads(task.doc_json), task.source)
    assert (arch.array.rows, arch.array.cols, arch.array.dataflow) == (8, 4, "is")
    assert (arch.ifmap.size_bytes, arch.filter.size_bytes, arch.ofmap.size_bytes) == (16384, 32768, 65536)
    assert arch.dram.bandwidth_bytes_per_cycle == pytest.approx(6.4e3 / 400)
    assert (arch.clock_mhz, arch.vector.lanes) == (400, 8)
