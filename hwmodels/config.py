"""Strict loader of accelerator YAML files (configs/accelerators/*.yaml) into frozen specs.

Every problem (unknown key, missing key, wrong type, impossible size, malformed YAML) raises
`nitisim.contract.errors.UserInputError(file, "key.path", "problem")`, which the CLI prints as one line and
exits 2. Nothing is defaulted silently except the documented optional keys.

Schema (version 1):

    version: 1
    name: edge-16x16                    # optional, defaults to the file stem
    array: {rows: 16, cols: 16, dataflow: ws}          # ws | os | is
    clock_mhz: 500
    numerics: {operand_bits: 8, accumulator_bits: 32}  # optional format: int (default) | fp32
    buffers:                            # each: bytes or kib, width_bytes, banks, double_buffered
      ifmap:  {kib: 64, width_bytes: 16, banks: 1, double_buffered: true}
      filter: {kib: 64, width_bytes: 16, banks: 1, double_buffered: true}
      ofmap:  {kib: 64, width_bytes: 64, banks: 2, double_buffered: true}
    dram: {bandwidth_bytes_per_cycle: 16, latency_cycles: 100, technology: LPDDR4}
          # or bandwidth_gb_s; optional energy_pj_per_bit with energy_source
    vector: {lanes: 16}
    energy:                             # optional overrides, each {pj, source}, taken as given
      mac_int8: {pj: 0.208, source: "Accelergy reference outputs, 65 nm"}
    node_nm: 65                         # optional, default 45: default energies (but DRAM's) and
                                        #   areas are scaled from 45 nm (hwmodels/scaling.py)
    area:                               # optional overrides, each {um2, source}, taken as given
      mac_int8: {um2: 600, source: "..."}   # instances: hwmodels/area.py INSTANCES
    host: {...}                         # optional, with calibration: a calibrated machine model
    calibration: {...}                  #   (hwmodels/host.py; written by `nitisim calibrate`)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from nitisim.contract.config_reader import MAX_INT, Fields, read_yaml  # noqa: F401 - MAX_INT: the cap callers quote
from nitisim.contract.errors import UserInputError
from nitisim.contract.shipped import CONFIGS, find_shipped, shipped_names

from . import area
from .energy import ACTIONS, DRAM_PJ_PER_BIT, DRAM_SOURCE, default_table
from .host import parse_calibration, parse_host
from .spec import (BUFFER_NAMES, DATAFLOWS, FORMATS, AcceleratorSpec, ArraySpec, BufferSpec, DramSpec,
                   EnergyEntry, VectorSpec, freeze_table)
from .tiling import min_buffer_bytes

SCHEMA_VERSION = 1
CONFIG_DIR = CONFIGS / "accelerators"  # the shipped accelerators, package data of nitisim
# MAX_INT (2**53, from the config reader): sizes and counts meet floats in the cost model, so larger
# integers are refused.

def _buffer(r: Fields, name: str) -> BufferSpec:
    r.keys({"width_bytes", "banks", "double_buffered"}, {"bytes", "kib"})
    if r.has("bytes") == r.has("kib"):
        raise r.error(None, "give exactly one of bytes or kib")
    size = r.int("bytes") if r.has("bytes") else r.int("kib") * 1024
    width, banks = r.int("width_bytes"), r.int("banks")
    if size % (width * banks):
        raise r.error("bytes" if r.has("bytes") else "kib",
                      f"{size} bytes is not a whole number of {banks} bank(s) x {width}-byte rows")
    return BufferSpec(name, size, width, banks, r.bool("double_buffered"))


def _dram(r: Fields, clock_mhz: float) -> tuple[DramSpec, EnergyEntry]:
    r.keys({"latency_cycles", "technology"},
           {"bandwidth_bytes_per_cycle", "bandwidth_gb_s", "energy_pj_per_bit", "energy_source"})
    if r.has("bandwidth_bytes_per_cycle") == r.has("bandwidth_gb_s"):
        raise r.error(None, "give exactly one of bandwidth_bytes_per_cycle or bandwidth_gb_s")
    if r.has("bandwidth_bytes_per_cycle"):
        bw = r.number("bandwidth_bytes_per_cycle")
    else:
        bw = r.number("bandwidth_gb_s") * 1e3 / clock_mhz  # GB/s / (cycles/s) = bytes per cycle
    tech = r.choice("technology", tuple(DRAM_PJ_PER_BIT))
    if r.has("energy_pj_per_bit") != r.has("energy_source"):
        raise r.error("energy_source" if r.has("energy_pj_per_bit") else "energy_pj_per_bit",
                      "energy_pj_per_bit and energy_source go together")
    if r.has("energy_pj_per_bit"):
        entry = EnergyEntry(r.number("energy_pj_per_bit"), "bit", r.str("energy_source"))
    else:
        entry = EnergyEntry(DRAM_PJ_PER_BIT[tech], "bit", f"{DRAM_SOURCE}, {tech}")
    return DramSpec(bw, r.int("latency_cycles", minimum=0), tech), entry


def _energy(r: Fields, table: dict[str, EnergyEntry]) -> dict[str, EnergyEntry]:
    overridable = tuple(a for a in ACTIONS if a != "dram")
    for action in r.doc:
        if action == "dram":
            raise r.error("dram", "set DRAM energy with dram.energy_pj_per_bit and dram.energy_source")
        if action not in overridable:
            raise r.error(str(action), f"unknown energy action; expected one of {list(overridable)}")
        e = r.sub(action)
        e.keys({"pj", "source"})
        table[action] = EnergyEntry(e.number("pj", positive=False), table[action].unit, e.str("source"))
    return table


def parse_accelerator(doc: Any, src: str) -> AcceleratorSpec:
    """Build an AcceleratorSpec from a parsed YAML document; `src` names the file in errors."""
    if doc is None:
        raise UserInputError(src, None, "empty file; an accelerator config is a mapping")
    r = Fields(src, doc)
    r.keys({"version", "array", "clock_mhz", "buffers", "dram", "vector"},
           {"name", "numerics", "energy", "host", "calibration", "node_nm", "area"})
    version = r.int("version")
    if version != SCHEMA_VERSION:
        raise r.error("version", f"unsupported config version {version}; this simulator reads {SCHEMA_VERSION}")
    name = r.str("name") if r.has("name") else Path(src).stem

    a = r.sub("array")
    a.keys({"rows", "cols", "dataflow"})
    array = ArraySpec(a.int("rows"), a.int("cols"), a.choice("dataflow", DATAFLOWS))
    clock = r.number("clock_mhz")

    fmt, op_bits, acc_bits = "int", 8, 32
    if r.has("numerics"):
        nr = r.sub("numerics")
        nr.keys(set(), {"format", "operand_bits", "accumulator_bits"})
        fmt = nr.choice("format", FORMATS) if nr.has("format") else fmt
        if fmt == "fp32":
            op_bits = acc_bits = 32
        for key in ("operand_bits", "accumulator_bits"):
            if nr.has(key):
                allowed = (32,) if fmt == "fp32" else ((8, 16) if key == "operand_bits" else (32, 64))
                bits = nr.int(key)
                if bits not in allowed:
                    raise nr.error(key, f"must be one of {list(allowed)} for format {fmt}, got {bits}")
                op_bits, acc_bits = (bits, acc_bits) if key == "operand_bits" else (op_bits, bits)

    br = r.sub("buffers")
    br.keys(set(BUFFER_NAMES))
    buffers = {name: _buffer(br.sub(name), name) for name in BUFFER_NAMES}
    # Every buffer must hold the smallest tile of any GEMM, in 4-byte words too, because the
    # report always prices the float32 twin of the accelerator on the same buffers.
    word = max(op_bits // 8, 4)
    for bname, (need, what) in min_buffer_bytes(array.dataflow, array.rows, array.cols, word).items():
        buf = buffers[bname]
        if buf.tile_bytes < need:
            key = "bytes" if "bytes" in br.doc[bname] else "kib"
            raise br.sub(bname).error(key, (
                f"{buf.size_bytes} bytes{' (double buffered: 2 slots)' if buf.double_buffered else ''} "
                f"cannot hold {what} in {word}-byte words ({need} bytes per slot) for the "
                f"{array.rows}x{array.cols} {array.dataflow} array"))

    dram, dram_energy = _dram(r.sub("dram"), clock)
    v = r.sub("vector")
    v.keys({"lanes"})
    vector = VectorSpec(v.int("lanes"))

    node = area.parse_node(r) if r.has("node_nm") else area.SOURCE_NODE_NM
    table = default_table({b: buffers[b].size_bytes // buffers[b].banks for b in BUFFER_NAMES}, dram.technology,
                          node)
    table["dram"] = dram_energy
    if r.has("energy"):
        table = _energy(r.sub("energy"), table)
    areas = area.default_table(op_bits, acc_bits, {b: (buffers[b].size_bytes // buffers[b].banks,
                                                       buffers[b].width_bytes) for b in BUFFER_NAMES}, node)
    if r.has("area"):
        areas = area.parse_overrides(r.sub("area"), areas)
    host = None
    if r.has("host") != r.has("calibration"):
        raise r.error("calibration" if r.has("host") else "host",
                      "host and calibration go together: a machine model says where its rates come from")
    if r.has("host"):
        host = replace(parse_host(r.sub("host")), calibrated=parse_calibration(r.sub("calibration")))
        if fmt != "int":
            raise r.error("host", "a calibrated host model measures int8 work; leave numerics.format int")
    return AcceleratorSpec(
        name=name, version=version, source=src, array=array, clock_mhz=clock, format=fmt,
        operand_bits=op_bits, accumulator_bits=acc_bits, ifmap=buffers["ifmap"], filter=buffers["filter"],
        ofmap=buffers["ofmap"], dram=dram, vector=vector, energy=freeze_table(table), host=host,
        node_nm=node, area=freeze_table(areas),
    )


def load_accelerator(path: str | Path) -> AcceleratorSpec:
    """Read and validate one accelerator YAML file."""
    return read_yaml(path, parse_accelerator)


def shipped_accelerators() -> list[str]:
    return shipped_names("accelerators")


def resolve_accelerator(name_or_path: str) -> AcceleratorSpec:
    """A path to a YAML file, or the name of a shipped config (`edge-16x16`, `tpu-like-128x128`, ...)."""
    path = find_shipped("accelerators", name_or_path)
    if path is None:
        raise UserInputError(name_or_path, "arch", f"not a YAML file nor a shipped accelerator {shipped_accelerators()}")
    return load_accelerator(path)
