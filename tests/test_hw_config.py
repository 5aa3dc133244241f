"""Accelerator configs: the shipped files load; every bad input is one UserInputError line naming the
file and the key path, and `nitisim simulate` turns it into exit status 2."""
from __future__ import annotations

import copy

import pytest
import yaml

from hwmodels.config import CONFIG_DIR, load_accelerator, parse_accelerator, shipped_accelerators
from hwmodels.energy import ACTIONS
from nitisim.cli import main as nitisim_main
from nitisim.contract.errors import UserInputError

SHIPPED = ("edge-16x16", "array-32x32", "tpu-like-128x128", "eyeriss-like")


def base_doc() -> dict:
    return yaml.safe_load((CONFIG_DIR / "edge-16x16.yaml").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_with_a_sourced_energy_table(name):
    arch = load_accelerator(CONFIG_DIR / f"{name}.yaml")
    assert arch.name == name and arch.version == 1
    assert set(ACTIONS) <= set(arch.energy)
    for action, entry in arch.energy.items():
        assert entry.source.strip() and entry.pj >= 0, action
    assert set(SHIPPED) <= set(shipped_accelerators())


def test_eyeriss_like_matches_its_reference():
    arch = load_accelerator(CONFIG_DIR / "eyeriss-like.yaml")
    assert (arch.array.rows, arch.array.cols, arch.array.dataflow) == (12, 14, "ws")
    assert sum(b.size_bytes for b in arch.buffers) == 108 * 1024
    assert arch.energy["ifmap_read"].pj == 18.18 and arch.energy["mac_int8"].pj == 0.208
    assert arch.energy["dram"].pj == 8.0  # 512 pJ per 64-bit access
    assert "row-stationary" in (CONFIG_DIR / "eyeriss-like.yaml").read_text()


def test_energy_defaults_follow_the_spec_table():
    arch = load_accelerator(CONFIG_DIR / "edge-16x16.yaml")
    assert arch.energy["mac_int8"].pj == 0.3 and arch.energy["mac_fp32"].pj == 4.6
    assert arch.energy["dram"].pj == 8.0  # LPDDR4
    doc = base_doc()
    doc["buffers"]["ifmap"]["kib"] = 32  # Horowitz: 32 KB -> 20 pJ per 64-bit read
    assert parse_accelerator(doc, "x.yaml").energy["ifmap_read"].pj == 20.0


def test_bandwidth_in_gb_per_s_converts_with_the_clock():
    doc = base_doc()
    doc["dram"] = {"bandwidth_gb_s": 10, "latency_cycles": 0, "technology": "HBM2"}
    doc["clock_mhz"] = 1000
    arch = parse_accelerator(doc, "x.yaml")
    assert arch.dram.bandwidth_bytes_per_cycle == 10.0 and arch.energy["dram"].pj == 3.9


def _set(doc, path, value):
    *head, last = path
    for key in head:
        doc = doc[key]
    if value is _DELETE:
        del doc[last]
    else:
        doc[last] = value


_DELETE = object()

BAD = [
    # (where, value, key path the message must name, words it must contain)
    (("colour",), "red", "colour", "unknown key"),
    (("array", "diagonal"), 3, "array.diagonal", "unknown key"),
    (("dram", "latency_cycles"), _DELETE, "dram.latency_cycles", "missing"),
    (("vector",), _DELETE, "vector", "missing"),
    (("array", "rows"), "16", "array.rows", "integer"),
    (("array", "rows"), True, "array.rows", "integer"),
    (("buffers", "ifmap", "double_buffered"), "yes", "buffers.ifmap.double_buffered", "true or false"),
    (("clock_mhz",), "fast", "clock_mhz", "number"),
    (("array", "rows"), 0, "array.rows", "at least 1"),
    (("array", "dataflow"), "rs", "array.dataflow", "one of"),
    (("buffers", "filter", "kib"), 1, "buffers.filter.kib", "cannot hold"),
    (("buffers", "ofmap", "kib"), 0, "buffers.ofmap.kib", "at least 1"),
    (("buffers", "ifmap", "banks"), 3, "buffers.ifmap.kib", "bank(s)"),
    (("dram", "bandwidth_bytes_per_cycle"), 8, "dram", "exactly one"),
    (("dram", "technology"), "SRAM", "dram.technology", "one of"),
    (("energy",), {"mac_int8": {"pj": 0.2}}, "energy.mac_int8.source", "missing"),
    (("energy",), {"teleport": {"pj": 1, "source": "x"}}, "energy.teleport", "unknown energy action"),
    (("version",), 2, "version", "unsupported"),
]


@pytest.mark.parametrize("where,value,path,words", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, where, value, path, words):
    doc = copy.deepcopy(base_doc())
    _set(doc, where, value)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserInputError) as err:
        load_accelerator(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: {path}:"), msg
    assert words in msg and "\n" not in msg


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("version: 1\narray: {rows: 16, cols: [\n")
    with pytest.raises(UserInputError) as err:
        load_accelerator(f)
    assert str(err.value).startswith(f"{f}: line ") and "malformed YAML" in str(err.value)


def test_empty_and_non_mapping_files(tmp_path):
    for text in ("", "- 1\n- 2\n"):
        f = tmp_path / "odd.yaml"
        f.write_text(text)
        with pytest.raises(UserInputError, match="odd.yaml"):
            load_accelerator(f)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    doc = base_doc()
    doc["array"]["cols"] = -4
    f = tmp_path / "neg.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert nitisim_main(["simulate", str(f), "--model", "lenet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nitisim: error: ") and f"{f}: array.cols:" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,words", [
    (["--phases", "forward,sideways"], "--phases"),
    (["--batch", "0"], "--batch"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, words):
    args = ["simulate", "edge-16x16", "--model", "lenet", "--out", str(tmp_path), *argv]
    assert nitisim_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_cli_unknown_arch_name_exits_2(capsys):
    assert nitisim_main(["simulate", "warp-drive", "--model", "lenet"]) == 2
    assert "warp-drive" in capsys.readouterr().err
