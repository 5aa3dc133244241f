"""Silicon area and technology node: the area table follows its cited sources, area is instances x
table computed by hand, node scaling follows Stillmaker & Baas's table and leaves 45 nm energies
untouched, the report shows it, and every bad node or area value is one line naming file and key."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import pytest
import yaml

from hwmodels import area, float32_variant, load_accelerator, parse_accelerator, resolve_accelerator, scaling
from hwmodels.config import CONFIG_DIR
from hwmodels.area import has_area
from hwmodels.report import summary
from hwmodels.spec import AreaEntry
from hwmodels.sram_area import AREA_UM2, bank_area_um2
from nitisim.cli import main as nitisim_main
from nitisim.contract.errors import UserInputError

SHIPPED = ("edge-16x16", "array-32x32", "tpu-like-128x128", "eyeriss-like")
# Horowitz, ISSCC 2014, 45 nm, um^2: the table the MAC-array area is priced from.
INT8_MULT, INT32_ADD, FP32_MULT, FP32_ADD = 282, 137, 7700, 4184


def base_doc() -> dict:
    return yaml.safe_load((CONFIG_DIR / "edge-16x16.yaml").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_int8_versus_float32_mac_array_area_ratio_follows_the_horowitz_table(name):
    arch = resolve_accelerator(name)
    int8, fp32 = area.area_um2(arch)["mac_array"], area.area_um2(float32_variant(arch))["mac_array"]
    # The node scales both PEs alike, so the ratio is the table's at every node: 11,884 / 419.
    assert fp32 / int8 == pytest.approx((FP32_MULT + FP32_ADD) / (INT8_MULT + INT32_ADD), rel=1e-12)
    assert round(fp32 / int8, 2) == 28.36


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_accelerator_reports_area_by_component_with_sources(name):
    arch = resolve_accelerator(name)
    assert has_area(arch)
    by_component = area.area_um2(arch)
    assert set(by_component) == set(area.COMPONENTS) and all(v > 0 for v in by_component.values())
    for instance in area.counts(arch):
        entry = arch.area[instance]
        assert entry.um2 > 0 and entry.source.strip(), instance
        if arch.node_nm != 45:  # a scaled default says so
            assert "Stillmaker & Baas" in entry.source, instance


def test_area_is_instances_times_the_table_by_hand():
    arch = resolve_accelerator("edge-16x16")  # 16x16 PEs, 16 lanes, 64 KiB x 16 B, 64 KiB x 16 B, 4 x 16 KiB x 32 B
    assert arch.area["mac_int8"].um2 == INT8_MULT + INT32_ADD
    assert arch.area["ifmap_bank"].um2 == dict(AREA_UM2[16])[65536]  # a CACTI table point, not interpolated
    assert arch.area["ofmap_bank"].um2 == dict(AREA_UM2[32])[16384]
    expected = {"mac_array": 256 * 419.0, "vector": 16 * 137.0, "ifmap": 1 * 187953.0, "filter": 1 * 187953.0,
                "ofmap": 4 * 53742.0}
    assert area.area_um2(arch) == pytest.approx(expected, rel=1e-12)
    twin = float32_variant(arch)  # same SRAM bytes; float32 PEs and lanes
    assert area.area_um2(twin) == pytest.approx({**expected, "mac_array": 256 * 11884.0, "vector": 16 * 4184.0})
    # Re-pricing is a new table, nothing else.
    cheap = replace(arch, area={**arch.area, "mac_int8": AreaEntry(100.0, "PE", "test")})
    assert area.area_um2(cheap) == pytest.approx({**expected, "mac_array": 25600.0})


def test_sram_bank_area_hits_the_cacti_points_and_grows_with_capacity():
    for width, points in AREA_UM2.items():
        for size, um2 in points:
            assert bank_area_um2(size, width) == pytest.approx(um2, rel=1e-12)
        sizes = [512, 1000, 3000, 12288, 100_000, 700_000, 5_000_000, 40_000_000]
        areas = [bank_area_um2(s, width) for s in sizes]
        assert all(a < b for a, b in zip(areas, areas[1:])), width
    # A width outside 8-64 bytes uses the nearest tabulated one.
    assert bank_area_um2(8192, 128) == bank_area_um2(8192, 64)
    assert bank_area_um2(8192, 4) == bank_area_um2(8192, 8)


def test_scaling_factors_are_stillmaker_and_baas_table_entries():
    assert scaling.area_factor(45, 45) == 1.0 and scaling.energy_factor(45, 45) == 1.0
    assert scaling.area_factor(45, 65) == 1.5 and scaling.area_factor(65, 45) == 0.66
    assert scaling.area_factor(45, 7) == 0.059 and scaling.area_factor(130, 7) == 0.0092
    # 28 nm lies a third of the way from 32 nm (0.46) to 20 nm (0.21).
    assert scaling.area_factor(45, 28) == pytest.approx(0.46 * 2 / 3 + 0.21 / 3)
    fit = {nm: sum(c * 0.8 ** (2 - k) for k, c in enumerate(coef)) for nm, coef in zip(scaling.NODES_NM, scaling.ENERGY)}
    assert scaling.energy_factor(45, 65) == pytest.approx(fit[65] / fit[45])
    nodes = [130, 100, 90, 65, 45, 40, 32, 28, 20, 16, 14, 10, 7]
    areas = [scaling.area_factor(45, n) for n in nodes]
    energies = [scaling.energy_factor(45, n) for n in nodes]
    assert all(a > b for a, b in zip(areas, areas[1:])) and all(a > b for a, b in zip(energies, energies[1:]))


def test_node_45_or_none_leaves_every_energy_entry_as_it_was():
    plain = parse_accelerator(base_doc(), "x.yaml")
    at45 = parse_accelerator({**base_doc(), "node_nm": 45}, "x.yaml")
    assert plain.node_nm == at45.node_nm == 45
    assert dict(plain.energy) == dict(at45.energy) and dict(plain.area) == dict(at45.area)
    assert plain.energy["mac_int8"].pj == 0.3 and plain.energy["ifmap_read"].pj == round(plain.energy["ifmap_read"].pj, 3)


def test_a_node_scales_the_defaults_but_not_dram_nor_explicit_entries():
    base = parse_accelerator(base_doc(), "x.yaml")
    doc = {**base_doc(), "node_nm": 28, "energy": {"vector_int8_op": {"pj": 0.05, "source": "given"}},
           "area": {"filter_bank": {"um2": 1234.5, "source": "given"}}}
    arch = parse_accelerator(doc, "x.yaml")
    e, a = scaling.energy_factor(45, 28), scaling.area_factor(45, 28)
    assert arch.energy["mac_int8"].pj == pytest.approx(0.3 * e) and arch.energy["dram"] == base.energy["dram"]
    assert arch.energy["ifmap_read"].pj == pytest.approx(base.energy["ifmap_read"].pj * e)
    assert arch.energy["vector_int8_op"].pj == 0.05 and arch.energy["vector_int8_op"].source == "given"
    assert arch.area["mac_int8"].um2 == pytest.approx(419 * a)
    assert arch.area["filter_bank"] == AreaEntry(1234.5, "bank", "given")
    eyeriss = resolve_accelerator("eyeriss-like")  # its own 65 nm table stays; the rest scales from 45 nm
    assert eyeriss.node_nm == 65 and eyeriss.energy["mac_int8"].pj == 0.208 and eyeriss.energy["ifmap_read"].pj == 18.18
    assert eyeriss.energy["vector_int32_op"].pj == pytest.approx(0.1 * scaling.energy_factor(45, 65))
    assert eyeriss.area["mac_int8"].um2 == pytest.approx(419 * 1.5)


def test_summary_and_report_carry_area_and_its_figures_of_merit(tmp_path):
    out = tmp_path / "sim"
    assert nitisim_main(["simulate", "eyeriss-like", "--model", "mlp", "--batch", "8", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    arch = resolve_accelerator("eyeriss-like")
    t, a = doc["total"], doc["area"]
    assert a["node_nm"] == 65 and a["total_mm2"] == pytest.approx(area.total_mm2(arch))
    assert t["area_by_component_mm2"] == pytest.approx({k: v * 1e-6 for k, v in area.area_um2(arch).items()})
    assert t["images_per_second"] == pytest.approx(8 / t["seconds"])
    assert t["images_per_second_per_mm2"] == pytest.approx(t["images_per_second"] / t["area_mm2"])
    assert t["energy_per_image_pj"] == pytest.approx(t["energy_pj"] / 8)
    assert t["edp_j_s"] == pytest.approx(t["energy_pj"] * 1e-12 * t["seconds"])
    assert t["edap_j_s_mm2"] == pytest.approx(t["edp_j_s"] * t["area_mm2"])
    assert doc["arch"]["area"]["mac_int8"]["source"] and doc["arch"]["node_nm"] == 65
    c = doc["int8_vs_fp32"]
    assert c["mac_array_area_ratio"] == pytest.approx(11884 / 419)
    assert c["area_ratio"] == pytest.approx(doc["fp32"]["total"]["area_mm2"] / t["area_mm2"])
    md = (out / "report.md").read_text()
    assert "## Area (65 nm)" in md and "| MAC array area |" in md and "float32 / int8 = 28.36" in md


def test_a_machine_model_has_no_area():
    host = load_accelerator(CONFIG_DIR.parent / "hosts" / "h200-sxm.yaml")
    assert not has_area(host)


_DELETE = object()
BAD = [
    # (top-level key, value, key path the message must name, words it must contain)
    ("node_nm", "small", "node_nm", "must be a number"),
    ("node_nm", True, "node_nm", "must be a number"),
    ("node_nm", math.nan, "node_nm", "must be a number"),
    ("node_nm", 3, "node_nm", "between 7 and 130 nm"),
    ("node_nm", 180, "node_nm", "between 7 and 130 nm"),
    ("node_nm", math.inf, "node_nm", "between 7 and 130 nm"),
    ("node_nm", -45, "node_nm", "between 7 and 130 nm"),
    ("area", {"mac_int8": {"um2": "big", "source": "x"}}, "area.mac_int8.um2", "non-negative number"),
    ("area", {"mac_int8": {"um2": -1, "source": "x"}}, "area.mac_int8.um2", "non-negative number"),
    ("area", {"mac_int8": {"um2": math.inf, "source": "x"}}, "area.mac_int8.um2", "non-negative number"),
    ("area", {"mac_int8": {"um2": math.nan, "source": "x"}}, "area.mac_int8.um2", "non-negative number"),
    ("area", {"mac_int8": {"um2": 5}}, "area.mac_int8.source", "missing"),
    ("area", {"dram_phy": {"um2": 5, "source": "x"}}, "area.dram_phy", "unknown area entry"),
    ("area", [1, 2], "area", "mapping"),
]


@pytest.mark.parametrize("key,value,path,words", BAD, ids=[f"{b[2]}:{b[1]!r}" for b in BAD])
def test_bad_node_or_area_is_one_line_naming_file_and_key(tmp_path, key, value, path, words):
    doc = copy.deepcopy(base_doc())
    doc[key] = value
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))  # inf and nan round-trip as .inf and .nan
    with pytest.raises(UserInputError) as err:
        load_accelerator(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: {path}:"), msg
    assert words in msg and "\n" not in msg


@pytest.mark.parametrize("key,value,path,words", [
    ("node_nm", 10**400, "node_nm", "between 7 and 130 nm"),
    ("area", {"mac_int8": {"um2": 10**400, "source": "x"}}, "area.mac_int8.um2", "non-negative number"),
], ids=["node_nm", "area.um2"])
def test_integer_past_the_float_range_is_one_line_not_an_overflow(tmp_path, key, value, path, words):
    """A YAML integer too large for a float (float() of it raises OverflowError) is refused like
    any other bad value: one line naming the file and key."""
    test_bad_node_or_area_is_one_line_naming_file_and_key(tmp_path, key, value, path, words)


def test_cli_bad_node_exits_2_with_one_line(tmp_path, capsys):
    doc = base_doc()
    doc["node_nm"] = "5nm"
    f = tmp_path / "node.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert nitisim_main(["simulate", str(f), "--model", "lenet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"nitisim: error: {f}: node_nm: must be a number of nanometres, got '5nm'"
    assert not (tmp_path / "o").exists()


def test_summary_of_a_scaled_twin_keeps_both_areas():
    from hwmodels import simulate_with_fp32
    from nitisim.contract.graph import build_graph
    from nitisim.contract.models import builtin_models

    arch = resolve_accelerator("tpu-like-128x128")
    result, fp32 = simulate_with_fp32(arch, build_graph(builtin_models()["mlp"], 4))
    doc = summary(result, fp32)
    assert doc["area"]["node_nm"] == doc["fp32"]["area"]["node_nm"] == 28
    assert doc["fp32"]["area"]["by_component_mm2"]["ifmap"] == doc["area"]["by_component_mm2"]["ifmap"]
