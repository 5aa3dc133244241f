"""Hostile config files: each is refused with one `nitisim: error:` line and exit status 2.

Covers the strict YAML loader (nitisim/contract/strict_yaml.py: encoding, depth, alias bombs, duplicate
keys, unbuildable scalars), the shortening of quoted values (nitisim/contract/values.py quote) and the
refusal of non-finite numbers in every reader that takes a float.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.contract.models import load_yaml
from nitisim.contract.strict_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from nitisim.contract.values import QUOTE_CHARS, quote

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))
EDGE = (ROOT / "configs" / "accelerators" / "edge-16x16.yaml").read_text()
TRAIN = (ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text()
SWEEP = (ROOT / "configs" / "sweeps" / "example.yaml").read_text()
GOOD_MODEL = "name: tiny\ninput: [28, 28, 1]\nlayers: [flatten, {linear: {out: 10}}]\n"


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI, check exit status 2 and a single stderr line, and return that line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("nitisim: error: ")
    return lines[0]


def refusal(path: Path) -> str:
    with pytest.raises(UserInputError) as info:
        load_yaml(path)
    text = str(info.value)
    assert "\n" not in text
    return text


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level lists the previous one 9 times (9**levels strings)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_shipped_configs_load_exactly_as_safe_load():
    """The strict loader changes nothing a valid file means: same values, same types, same order."""
    assert len(SHIPPED) >= 15
    for path in SHIPPED:
        strict, plain = load_yaml(path), yaml.safe_load(path.read_text())
        assert strict == plain and repr(strict) == repr(plain), path


def test_not_utf8_names_file_line_and_byte_offset(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: tiny\ninput: [28, 28, 1]  # caf\xe9\nlayers: [flatten]\n")
    line = one_error_line(capsys, ["models", str(path)])
    assert line == f"nitisim: error: {path}: line 2: not UTF-8 text: byte 0xe9 at offset 36"


def test_nesting_5000_deep_is_refused_at_the_depth_limit(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("input: " + "[" * 5000 + "]" * 5000 + "\n")
    line = one_error_line(capsys, ["models", str(path)])
    assert line == f"nitisim: error: {path}: line 1: malformed YAML: nesting deeper than {MAX_DEPTH} levels"


def test_nesting_at_the_limit_still_loads(tmp_path):
    path = tmp_path / "deep-ok.yaml"
    path.write_text("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")  # the mapping is level 1
    value = load_yaml(path)["a"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert value == []


def test_alias_bomb_is_refused(tmp_path, capsys):
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs() + "input: *a8\n")
    assert path.stat().st_size < 1000  # under 1 kB of text, 9**9 strings once expanded
    line = one_error_line(capsys, ["models", str(path)])
    assert line.endswith(f"malformed YAML: aliases expand past {MAX_ALIAS_NODES} nodes")
    assert len(line) < 200


def test_small_aliases_and_merge_keys_still_work(tmp_path):
    """Anchors reused a few times, and `<<:` merges followed by an overriding key, are valid YAML."""
    path = tmp_path / "anchors.yaml"
    path.write_text("buf: &buf {kib: 64, banks: 1}\nifmap: *buf\nofmap:\n  <<: *buf\n  banks: 2\n")
    assert load_yaml(path) == {"buf": {"kib": 64, "banks": 1}, "ifmap": {"kib": 64, "banks": 1},
                               "ofmap": {"kib": 64, "banks": 2}}


def test_alias_to_its_own_enclosing_node_is_refused(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("a: &a [1, *a]\n")
    assert refusal(path).endswith("line 1: malformed YAML: alias *a refers to a node that contains it")


def test_duplicate_key_names_key_and_both_lines(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(GOOD_MODEL.replace("layers:", "name: other\nlayers:"))
    line = one_error_line(capsys, ["models", str(path)])
    assert line == f"nitisim: error: {path}: line 3: malformed YAML: duplicate key 'name' (first on line 1)"


def test_duplicate_key_in_a_nested_mapping(tmp_path):
    path = tmp_path / "dup-nested.yaml"
    path.write_text(EDGE.replace("array: {rows: 16, cols: 16,", "array: {rows: 16, cols: 16, rows: 8,", 1))
    assert refusal(path) == f"{path}: line 4: malformed YAML: duplicate key 'rows' (first on line 4)"


@pytest.mark.parametrize("scalar, words", [
    ("2026-13-40", "cannot read this timestamp (ValueError: month must be in 1..12)"),
    ("1" * 5000, "cannot read this int (ValueError: Exceeds the limit (4300 digits)"),
    ("!!float", "cannot read this float (IndexError: string index out of range)"),  # PyYAML indexes ''[0]
    ("!!bool", "cannot read this bool (KeyError: '')"),
])
def test_scalars_python_cannot_build_are_refused(tmp_path, scalar, words):
    path = tmp_path / "scalar.yaml"
    path.write_text(f"a: {scalar}\n")
    assert words in refusal(path)


def test_forbidden_character_is_one_line(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"a: 1\nb: x\x00\n")
    assert refusal(path) == f"{path}: line 2: malformed YAML: character #x0000 is not allowed in YAML"


def test_quoted_values_are_shortened(tmp_path, capsys):
    """A value embedded in an error message is cut to QUOTE_CHARS characters with an ellipsis."""
    path = tmp_path / "long.yaml"
    path.write_text(GOOD_MODEL + "classes: [" + ", ".join(["12345"] * 2000) + "]\n")
    line = one_error_line(capsys, ["models", str(path)])
    assert line.startswith(f"nitisim: error: {path}: classes: must be a positive integer, got [12345, ")
    assert len(line) < len(f"nitisim: error: {path}: classes: must be a positive integer, got ") + QUOTE_CHARS + 1
    assert len(quote("x" * 10**6)) == QUOTE_CHARS and quote("x" * 10**6).endswith("...")
    assert quote(10**5000) == "<16610-bit integer>"  # repr() itself refuses ints this long


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.0e+999"])
def test_accelerator_non_finite_clock_is_refused(tmp_path, capsys, value):
    path = tmp_path / "acc.yaml"
    path.write_text(EDGE.replace("clock_mhz: 500", f"clock_mhz: {value}"))
    assert "clock_mhz: 500" in EDGE
    line = one_error_line(capsys, ["simulate", "--model", "lenet", str(path)])
    assert line.startswith(f"nitisim: error: {path}: clock_mhz: must be a finite number, got ")


def test_accelerator_energy_and_integer_overflow_are_refused(tmp_path):
    from hwmodels.config import MAX_INT, load_accelerator

    nan_energy = tmp_path / "nan.yaml"
    nan_energy.write_text(EDGE + "energy:\n  mac_int8: {pj: .nan, source: test}\n")
    with pytest.raises(UserInputError, match=r"energy\.mac_int8\.pj: must be a finite number, got nan"):
        load_accelerator(nan_energy)
    huge = tmp_path / "huge.yaml"
    huge.write_text(EDGE.replace("rows: 16", f"rows: {10**400}", 1))
    with pytest.raises(UserInputError, match=rf"array\.rows: must be at most {MAX_INT} \(2\*\*53\)"):
        load_accelerator(huge)


def test_host_curve_with_infinity_is_refused(tmp_path):
    from hwmodels.config import load_accelerator

    host = (ROOT / "configs" / "hosts" / "h200-sxm.yaml").read_text()
    doc = yaml.safe_load(host)
    doc["host"]["curves"] = {"relu": [[4096, 9000.0], [16384, float("inf")]]}
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserInputError, match=r"host\.curves\.relu: .*finite positive numbers"):
        load_accelerator(path)


@pytest.mark.parametrize("key, value", [("lr", ".inf"), ("weight_decay", ".inf"), ("momentum", ".nan"),
                                        ("lr", "'1e999'")])
def test_training_fp32_non_finite_is_refused(tmp_path, key, value):
    from nitisim.train.config import load_config

    path = tmp_path / "train.yaml"
    path.write_text(TRAIN.replace(f"  {key}:", f"  {key}: {value}\n  old_{key}:").replace(f"  old_{key}:", "  #"))
    with pytest.raises(UserInputError, match=rf"fp32\.{key}: must be a finite number"):
        load_config(path)


@pytest.mark.parametrize("value", [".inf", ".nan", str(10**400)])
def test_sweep_non_finite_clock_is_refused(tmp_path, value):
    from hwmodels.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text(SWEEP + f"  clock_mhz: [500, {value}]\n")
    with pytest.raises(UserInputError, match=r"parameters\.clock_mhz\[1\]: must be a positive number"):
        load_grid(path)
