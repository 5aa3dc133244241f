"""The area model against published chips: eyeriss-like against Eyeriss, tpu-like against TPU v1
(and what can be said about TPU v2), plus every shipped accelerator's area and its float32 twin's.

Nothing is measured: the model's numbers come from `hwmodels.area` (Horowitz 2014 arithmetic and
CACTI SRAM at 45 nm, scaled by Stillmaker & Baas 2017), the chips' from their papers, each with
its source and how sure the figure is. Writes docs/results.md section `area-validation`.

    python benchmarks/area_validation.py
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

from hwmodels import area, float32_variant, parse_accelerator, resolve_accelerator, scaling  # noqa: E402
from hwmodels.config import CONFIG_DIR, shipped_accelerators  # noqa: E402
from hwmodels.sram_area import bank_area_um2  # noqa: E402
from nitisim.contract.config_reader import load_document  # noqa: E402

# Eyeriss: Chen, Krishna, Emer, Sze, ISSCC 2016 and JSSC 52(1) 2017.
EYERISS_CORE_MM2 = 12.25  # 3.5 mm x 3.5 mm core, 65 nm
EYERISS_PES = 168
EYERISS_SRAM_KB = 181.5  # 108 KB global buffer + 168 filter scratchpads of 224 x 16 b (448 B): 73.5 KB
EYERISS_FILTER_SPAD_BYTES = 448
# TPU v1: Jouppi et al., ISCA 2017.
TPU1_DIE_MM2 = 331  # "< 331" mm^2 (Table 2), 28 nm, 700 MHz
TPU1_MACS = 256 * 256
TPU1_UB_MIB, TPU1_ACC_MIB = 24, 4
TPU1_SHARE = {"matrix multiply unit": 0.24, "unified buffer": 0.29, "accumulators": 0.06}  # Figure 2 labels


def mm2(um2: float) -> float:
    return um2 * 1e-6


def shipped_table() -> str:
    lines = ["| accelerator | node (nm) | MAC array | vector | ifmap | filter | ofmap | total (mm^2) "
             "| float32 twin (mm^2) | fp32 / int8 | MAC array fp32 / int8 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in shipped_accelerators():
        arch = resolve_accelerator(name)
        a, f = area.area_um2(arch), area.area_um2(float32_variant(arch))
        lines.append(f"| {name} | {arch.node_nm:g} | " + " | ".join(f"{mm2(a[c]):.4g}" for c in area.COMPONENTS)
                     + f" | {mm2(sum(a.values())):.4g} | {mm2(sum(f.values())):.4g} "
                     f"| {sum(f.values()) / sum(a.values()):.2f} | {f['mac_array'] / a['mac_array']:.2f} |")
    return "\n".join(lines)


def eyeriss() -> str:
    arch = resolve_accelerator("eyeriss-like")
    a = area.area_um2(arch)
    total = mm2(sum(a.values()))
    sram = mm2(a["ifmap"] + a["filter"] + a["ofmap"])
    doc = load_document(CONFIG_DIR / "eyeriss-like.yaml")
    doc["numerics"] = {"operand_bits": 16, "accumulator_bits": 32}
    wide = parse_accelerator(doc, "eyeriss-like, 16-bit operands")
    mac16 = mm2(area.area_um2(wide)["mac_array"])
    spad_um2 = bank_area_um2(EYERISS_FILTER_SPAD_BYTES, 8) * scaling.area_factor(45, 65)
    spads = mm2(spad_um2 * EYERISS_PES)
    glb_cacti65 = 27 * 0.0281628  # CACTI 7.0 run at 65 nm directly: 4 KiB bank, 8-byte words, 0.0281628 mm^2
    with_both = total - mm2(a["mac_array"]) + mac16 + spads
    return f"""### eyeriss-like against Eyeriss (65 nm)

| | model (eyeriss-like, 65 nm) | Eyeriss (ISSCC 2016 / JSSC 2017) |
|---|---:|---:|
| PEs | {arch.array.pes} | {EYERISS_PES} |
| on-chip SRAM | {sum(b.size_bytes for b in arch.buffers) / 1024:g} KiB (the global buffer only) | {EYERISS_SRAM_KB} KB (108 KB global buffer + 73.5 KB filter scratchpads) |
| MAC array | {mm2(a['mac_array']):.3f} mm^2 ({arch.area['mac_int8'].um2:.0f} um^2 per int8 PE) | not published separately |
| SRAM | {sram:.3f} mm^2 | not published separately |
| total | **{total:.3f} mm^2** | **{EYERISS_CORE_MM2} mm^2 core** |

The model accounts for {100 * total / EYERISS_CORE_MM2:.1f} % of the core. The difference, in the order of what is
known about it:

- **What the model leaves out is most of the chip.** It prices arithmetic and SRAM macros only. Eyeriss's core
  also holds each PE's control, its ifmap and psum scratchpads (registers: 12 and 24 16-bit words), the
  multicast networks that feed the array (GIN/GON), the run-length codec, ReLU, the configuration chain, clock
  tree and the space that placement leaves between cells; none of these has a per-instance figure in the cited
  tables.
- **Operand width.** Eyeriss computes in 16-bit fixed point; the config is int8 (NITI's arithmetic). With 16-bit
  operands (a PE of {area.default_table(16, 32, {})['mac_int8'].um2:,.0f} um^2 at 45 nm: a 16-bit multiplier
  log-log between Horowitz's 8- and 32-bit ones, plus the 32-bit adder) the MAC array is {mac16:.3f} mm^2
  instead of {mm2(a['mac_array']):.3f}.
- **Filter scratchpads.** 168 x 448 B = 73.5 KB of SRAM are not modelled (the config maps Eyeriss's
  row-stationary dataflow to weight-stationary). Priced like the buffers (CACTI table extrapolated below
  1 KiB, then x{scaling.area_factor(45, 65):g} to 65 nm) they add {spads:.3f} mm^2; CACTI's smallest
  organisable banks are already periphery-dominated, so this is a lower bound.
- **SRAM scaling.** The 27 banks of 4 KiB cost {sram:.3f} mm^2 scaled from 45 nm by Stillmaker & Baas's
  logic factor (x1.5); CACTI run at 65 nm directly gives {glb_cacti65:.3f} mm^2 (its own 45 to 65 nm ratio is
  about x2.09, the square of the feature size). Which is closer for Eyeriss's macros is not known here.

With 16-bit MACs and the filter scratchpads the model reaches {with_both:.2f} mm^2,
{100 * with_both / EYERISS_CORE_MM2:.0f} % of the core. The model is therefore a lower bound for the
datapath and memories, not a floor-plan estimate; relative comparisons (int8 against float32, one array
size against another) are what it is meant for. Eyeriss's figures: 12.25 mm^2, 168 PEs and 181.5 KB come from the
papers as quoted in this project's issue; the split of the 181.5 KB (108 KB global buffer, 224 x 16 b filter
scratchpads per PE) is from the JSSC paper and agrees to the byte (108 KB + 168 x 448 B = 181.5 KB)."""


def tpu() -> str:
    arch = resolve_accelerator("tpu-like-128x128")
    a = area.area_um2(arch)
    per_mac = arch.area["mac_int8"].um2
    ub_bank = arch.area["ifmap_bank"].um2  # 1 MiB of 16-byte words at 28 nm
    acc_bank = arch.area["ofmap_bank"].um2  # 1 MiB of 64-byte words at 28 nm
    mmu_model = mm2(per_mac * TPU1_MACS)
    ub_model = mm2(ub_bank * TPU1_UB_MIB)
    acc_model = mm2(acc_bank * TPU1_ACC_MIB)
    pub = {k: v * TPU1_DIE_MM2 for k, v in TPU1_SHARE.items()}
    f16 = scaling.area_factor(45, 16)
    mxu_bf16 = mm2(128 * 128 * (1640 + 4184) * f16)
    mxu_int8 = mm2(128 * 128 * 419 * f16)
    return f"""### tpu-like-128x128 against TPU v1 (28 nm)

The config is a quarter of TPU v1's array (128 x 128 of its 256 x 256) with 24.25 MiB of SRAM
({mm2(sum(a.values())):.1f} mm^2 in all at 28 nm: MAC array {mm2(a['mac_array']):.2f}, buffers
{mm2(a['ifmap'] + a['filter'] + a['ofmap']):.1f}). Compared per unit and scaled to TPU v1's sizes:

| block | model at 28 nm | TPU v1 (Jouppi et al., ISCA 2017) | TPU v1 / model |
|---|---:|---:|---:|
| one 8-bit MAC cell | {per_mac:.0f} um^2 | <= {pub['matrix multiply unit'] * 1e6 / TPU1_MACS:,.0f} um^2 (24 % of < 331 mm^2 over 65,536 MACs) | {pub['matrix multiply unit'] * 1e6 / TPU1_MACS / per_mac:.1f} |
| matrix unit, 65,536 MACs | {mmu_model:.1f} mm^2 | <= {pub['matrix multiply unit']:.0f} mm^2 | {pub['matrix multiply unit'] / mmu_model:.1f} |
| unified buffer, 24 MiB | {ub_model:.1f} mm^2 ({mm2(ub_bank):.2f} per MiB bank, 16-byte words) | <= {pub['unified buffer']:.0f} mm^2 (29 %) | {pub['unified buffer'] / ub_model:.1f} |
| accumulators, 4 MiB | {acc_model:.1f} mm^2 ({mm2(acc_bank):.2f} per MiB bank, 64-byte words) | <= {pub['accumulators']:.0f} mm^2 (6 %) | {pub['accumulators'] / acc_model:.1f} |

The published figures: die "< 331 mm^2" at 28 nm (Table 2), the unified buffer "almost a third of the die" and
the matrix unit "a quarter" (text), and the per-block shares 29 % / 24 % / 6 % as labelled on the floor plan
(Figure 2; its caption: buffers 37 %, compute 30 %, I/O 10 %, control 2 %). The three block shares and the 2 %
of control agree with a secondary account of the floor plan (Mynavi News, 2017-04-11, on the ISCA paper); the
caption's group shares and the die size are as recalled from the paper, not re-read.

Why the chip is larger, block by block:

- **MAC cell, about {pub['matrix multiply unit'] * 1e6 / TPU1_MACS / per_mac:.0f}x.** Horowitz's figures are a bare 8-bit
  multiplier and 32-bit adder. A systolic cell also holds its pipeline registers (the input byte passed right,
  two weight bytes for double-buffered weights, the 32-bit partial sum passed down: some 56 flip-flops), their
  clocking, and the wiring between cells; none of it is in the cited tables. The Stillmaker & Baas factor (45 to 28 nm: x{scaling.area_factor(45, 28):.3f}) assumes logic that scales
  ideally; wire- and register-dominated layouts scale less.
- **SRAM, about {pub['unified buffer'] / ub_model:.0f}x.** The model's banks are CACTI's single-port, area-optimal macros. The unified buffer
  delivers 256 B per cycle to the array while taking results back, and the paper says its size was chosen partly
  to match the matrix unit's pitch; the accumulators are read, added to and written (256 x 32 b) every cycle.
  Wide, multi-ported, pitch-matched memories have far more periphery per bit than a CACTI macro.
- **The rest of the die** (I/O 10 %, control 2 %, the activation pipeline, DDR3 and PCIe interfaces, the
  weight FIFO) is not modelled at all; the model has no DRAM PHY entry because no cited per-instance figure exists.

TPU v2 (Norrie et al., IEEE Micro 2021: 16 nm, two TensorCores each with one 128 x 128 matrix unit of bfloat16
multipliers accumulating in float32) has a published floor plan, but no per-block area figure is quoted here:
this session could not reach the paper and will not invent one. What the model predicts for it, to compare when
someone can: one 128 x 128 unit with int8 PEs is {mxu_int8:.2f} mm^2 at 16 nm; with a bfloat16-like PE priced
as Horowitz's fp16 multiplier plus fp32 adder (1,640 + 4,184 um^2 at 45 nm) it is {mxu_bf16:.1f} mm^2, and the
float32 twin's PE would give {mm2(128 * 128 * 11884 * f16):.1f} mm^2: the int8 training array is
{mxu_bf16 / mxu_int8:.0f}x smaller than a bfloat16 one of the same shape, {11884 / 419:.0f}x smaller than a float32 one."""


def main() -> None:
    body = f"""The area model (docs/hwmodel.md, Area) prices instances from Horowitz (ISSCC 2014, 45 nm) for
arithmetic and CACTI 7.0 (45 nm) for SRAM banks, scaled to each config's `node_nm` with Stillmaker & Baas
(2017). It counts no registers, interconnect, control, I/O or placement overhead, so it is a lower bound on a
chip's area; these comparisons say by how much, and why.

Every shipped accelerator, and its float32 twin (same SRAM bytes; float32 PEs and vector lanes), in mm^2:

{shipped_table()}

The MAC array ratio is Horowitz's (7,700 + 4,184) / (282 + 137) = {11884 / 419:.2f} at every node;
the whole-chip ratio is smaller because SRAM, the same bytes in both, is most of every config.

{eyeriss()}

{tpu()}
"""
    path = write_section("area-validation", "Silicon area: the model against published chips "
                         "(benchmarks/area_validation.py)", body, command="python benchmarks/area_validation.py")
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
