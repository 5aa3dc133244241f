"""GEMM tiling on a systolic array: SCALE-Sim's closed forms and a capacity-driven tile search.

Pure functions, no SimPy. A GEMM C[M,N] = A[M,K] . B[K,N] runs as *folds*: the array holds an R x C
block of the stationary operand (or of the outputs, for os) and streams the third dimension through:

    dataflow  array rows  array cols  streamed   cycles per fold (SCALE-Sim v2)
    ws        K           N           M          2R + C + M - 2   (R to preload weights)
    os        M           N           K          K + R + C - 2
    is        K           M           N          2R + C + N - 2

A *tile* is what sits in the SRAM buffers at once: Tm x Tk of A (ifmap buffer), Tk x Tn of B (filter
buffer), Tm x Tn of partial sums (ofmap buffer), each slot of a double-buffered SRAM holding one.
Tiles in the array's spatial dimensions are whole folds; splitting the streamed dimension into
several tiles costs one more fold fill/drain per piece (the array must be re-primed), unless each
tile is a single fold and the streamed loop is innermost, so the pieces chain through the array.

DRAM traffic of a tiling follows the loop-nest rule (as in Timeloop): an operand is re-read for
every iteration of a loop that does not index it but sits outside a loop that does; partial sums
spill (written and read back) when the reduction loop sits outside an output loop. The search picks
the tiling with the least DRAM traffic among those that fit, then the fewest compute cycles, then
the fewest tiles: DRAM first, so with tight buffers it will accept re-priming cycles to avoid
re-reading an operand. Because a larger buffer only adds feasible tilings, DRAM bytes never grow when an
SRAM grows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from .spec import AcceleratorSpec

# dataflow -> (dimension on array rows, dimension on array columns, streamed dimension)
ROLES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {"ws": ("k", "n", "m"), "os": ("m", "n", "k"), "is": ("k", "m", "n")})
ORDERS: tuple[str, ...] = ("mkn", "mnk", "kmn", "knm", "nmk", "nkm")  # outer -> inner tile loops
MAX_OUTPUT_BYTES = 8  # an int64 weight gradient is the widest GEMM output element


def fold_count(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> int:
    dims = {"m": m, "k": k, "n": n}
    r, c, _ = ROLES[dataflow]
    return math.ceil(dims[r] / rows) * math.ceil(dims[c] / cols)


def fold_overhead(dataflow: str, rows: int, cols: int) -> int:
    """Cycles a fold spends beyond streaming: preload (ws, is) plus the pipeline fill and drain."""
    return rows + cols - 2 if dataflow == "os" else 2 * rows + cols - 2


def cycles_per_fold(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> int:
    streamed = {"m": m, "k": k, "n": n}[ROLES[dataflow][2]]
    return fold_overhead(dataflow, rows, cols) + streamed


def scalesim_cycles(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2 "Total Cycles": folds x cycles per fold - 1 (its report gives the last index)."""
    return fold_count(dataflow, rows, cols, m, k, n) * cycles_per_fold(dataflow, rows, cols, m, k, n) - 1


def min_buffer_bytes(dataflow: str, rows: int, cols: int, word_bytes: int) -> dict[str, tuple[int, str]]:
    """Bytes one tile slot needs for the smallest fold of any GEMM: one streamed row (or column) of
    the streamed operands, the whole R x C stationary block, and one row of outputs."""
    acc = MAX_OUTPUT_BYTES
    need = {
        "ws": {"ifmap": (rows * word_bytes, f"one {rows}-wide input row"),
               "filter": (rows * cols * word_bytes, f"one {rows}x{cols} weight fold"),
               "ofmap": (cols * acc, f"one {cols}-wide row of {acc}-byte partial sums")},
        "os": {"ifmap": (rows * word_bytes, f"one {rows}-high input column"),
               "filter": (cols * word_bytes, f"one {cols}-wide weight row"),
               "ofmap": (rows * cols * acc, f"one {rows}x{cols} output fold of {acc}-byte sums")},
        "is": {"ifmap": (rows * cols * word_bytes, f"one {rows}x{cols} input fold"),
               "filter": (rows * word_bytes, f"one {rows}-high weight column"),
               "ofmap": (cols * acc, f"one {cols}-wide row of {acc}-byte partial sums")},
    }
    return need[dataflow]


@dataclass(frozen=True)
class GemmShape:
    """One GEMM as the array and the memories see it."""

    m: int
    k: int
    n: int
    a_elem_bytes: int  # bytes per A element in SRAM (as the array reads it, im2col-expanded)
    b_elem_bytes: int
    c_elem_bytes: int  # partial-sum / output element
    a_dram_bytes: int  # bytes of the A tensor as stored (raw pixels, not the im2col expansion)
    b_dram_bytes: int
    c_dram_bytes: int  # the output as stored (x-shaped after col2im for an input gradient)


class InfeasibleTiling(Exception):
    """No tile fits a buffer; carries the buffer name so the caller can name the config key."""

    def __init__(self, buffer: str, message: str):
        super().__init__(message)
        self.buffer = buffer


@dataclass(frozen=True)
class Tiling:
    dataflow: str
    tm: int
    tk: int
    tn: int
    order: str  # tile loops outer -> inner, e.g. "mnk"
    trips: tuple[int, int, int]  # tiles along m, k, n
    folds: int  # SCALE-Sim folds of the whole GEMM
    cycles_per_fold: int  # SCALE-Sim cycles per fold with the streamed dimension whole
    stream_tiles: int  # times each fold is primed: the streamed dimension's pieces, or 1 if they chain
    compute_cycles: int  # true count: folds * (stream_tiles * overhead + streamed extent)
    a_refetch: int  # times A is read from DRAM
    b_refetch: int
    psum_spill_bytes: int  # partial sums written to DRAM and read back (each direction)
    footprint_bytes: tuple[int, int, int]  # one tile of A, B, C
    sram_bytes: dict  # array-side SRAM traffic: ifmap_read, filter_read, ofmap_read, ofmap_write

    @property
    def tiles(self) -> int:
        return self.trips[0] * self.trips[1] * self.trips[2]

    @property
    def scalesim_cycles(self) -> int:
        return self.folds * self.cycles_per_fold - 1

    def dram_read_bytes(self, g: GemmShape) -> int:
        return g.a_dram_bytes * self.a_refetch + g.b_dram_bytes * self.b_refetch + self.psum_spill_bytes

    def dram_bytes(self, g: GemmShape) -> int:
        """The search's objective: operand reads plus partial-sum spills both ways (the final output
        write is the placement's business)."""
        return self.dram_read_bytes(g) + self.psum_spill_bytes


def _candidates(extent: int, unit: int) -> np.ndarray:
    """Tile sizes for one dimension: unit * 2**i below the extent, and the extent itself."""
    sizes = []
    t = unit
    while t < extent:
        sizes.append(t)
        t *= 2
    sizes.append(extent)
    return np.asarray(sizes, dtype=np.int64)


def _ceil_div(a, b):
    return -(-a // b)


def choose_tiling(g: GemmShape, arch: AcceleratorSpec) -> Tiling:
    """The least-DRAM-traffic tiling of g that fits arch's buffers (ties: fewer cycles, fewer tiles)."""
    df, rows, cols = arch.array.dataflow, arch.array.rows, arch.array.cols
    row_dim, col_dim, stream_dim = ROLES[df]
    ext = {"m": g.m, "k": g.k, "n": g.n}
    unit = {row_dim: rows, col_dim: cols, stream_dim: 1}
    tm, tk, tn = (a.ravel() for a in np.meshgrid(
        _candidates(g.m, unit["m"]), _candidates(g.k, unit["k"]), _candidates(g.n, unit["n"]), indexing="ij"))
    trips = {"m": _ceil_div(g.m, tm), "k": _ceil_div(g.k, tk), "n": _ceil_div(g.n, tn)}
    foot_a, foot_b, foot_c = tm * tk * g.a_elem_bytes, tk * tn * g.b_elem_bytes, tm * tn * g.c_elem_bytes
    fits = ((foot_a <= arch.ifmap.tile_bytes) & (foot_b <= arch.filter.tile_bytes)
            & (foot_c <= arch.ofmap.tile_bytes))
    if not fits.any():
        for name, foot, buf in (("ifmap", foot_a, arch.ifmap), ("filter", foot_b, arch.filter),
                                ("ofmap", foot_c, arch.ofmap)):
            if (foot > buf.tile_bytes).all():
                raise InfeasibleTiling(name, f"needs at least {int(foot.min())} bytes per tile slot for a "
                                             f"{g.m}x{g.k}x{g.n} GEMM, has {buf.tile_bytes}")
        raise InfeasibleTiling("ifmap", "no tile fits all three buffers at once")  # pragma: no cover

    folds = fold_count(df, rows, cols, g.m, g.k, g.n)
    overhead = fold_overhead(df, rows, cols)
    n_tiles = trips["m"] * trips["k"] * trips["n"]
    one_fold = (tile_dims(tm, tk, tn, row_dim) <= rows) & (tile_dims(tm, tk, tn, col_dim) <= cols)

    best = None
    for order in ORDERS:
        pos = {d: order.index(d) for d in order}

        def refetch(irrelevant: str, relevant: str) -> np.ndarray:
            # re-read once per iteration of an outer loop that does not index the operand
            inner = np.zeros(tm.shape, dtype=bool)
            for d in relevant:
                if pos[d] > pos[irrelevant]:
                    inner |= trips[d] > 1
            return np.where(inner, trips[irrelevant], 1)

        f_a, f_b = refetch("n", "mk"), refetch("m", "kn")
        spill = np.zeros(tm.shape, dtype=bool)
        for d in "mn":
            if pos[d] > pos["k"]:
                spill |= trips[d] > 1
        spill &= trips["k"] > 1
        psum = np.where(spill, g.c_dram_bytes * (trips["k"] - 1), 0)
        dram = g.a_dram_bytes * f_a + g.b_dram_bytes * f_b + 2 * psum
        dram = np.where(fits, dram, np.iinfo(np.int64).max)
        # The array re-primes a fold for every streamed piece, unless each tile is a single fold
        # and the streamed loop is innermost: then consecutive pieces just keep streaming through.
        innermost = np.ones(tm.shape, dtype=bool)
        for d in order[pos[stream_dim] + 1:]:
            innermost &= trips[d] == 1
        pieces = np.where(one_fold & innermost, 1, trips[stream_dim])
        compute = folds * (pieces * overhead + ext[stream_dim])
        i = int(np.lexsort((n_tiles, compute, dram))[0])
        key = (int(dram[i]), int(compute[i]), int(n_tiles[i]))
        if best is None or key < best[0]:
            best = (key, order, i, int(f_a[i]), int(f_b[i]), int(psum[i]), int(pieces[i]), int(compute[i]))

    _, order, i, f_a, f_b, psum, pieces, compute = best
    t = {"m": int(tm[i]), "k": int(tk[i]), "n": int(tn[i])}
    nt = {d: int(trips[d][i]) for d in "mkn"}
    return Tiling(
        dataflow=df, tm=t["m"], tk=t["k"], tn=t["n"], order=order, trips=(nt["m"], nt["k"], nt["n"]),
        folds=folds, cycles_per_fold=cycles_per_fold(df, rows, cols, g.m, g.k, g.n),
        stream_tiles=pieces, compute_cycles=compute, a_refetch=f_a, b_refetch=f_b,
        psum_spill_bytes=psum,
        footprint_bytes=(int(foot_a[i]), int(foot_b[i]), int(foot_c[i])),
        sram_bytes=_array_sram_bytes(g, df, rows, cols, pieces),
    )


def tile_dims(tm, tk, tn, dim: str):
    return {"m": tm, "k": tk, "n": tn}[dim]


def _array_sram_bytes(g: GemmShape, df: str, rows: int, cols: int, pieces: int) -> dict:
    """Bytes the array reads from / writes to the SRAMs (SCALE-Sim's access counts, tiled).

    `pieces` is how many times each fold is primed (the streamed dimension's pieces, or 1). ws: each
    input row streams once per weight column fold; weights load once per piece; partial sums are
    read-modify-written in the ofmap buffer once per reduction fold. os: inputs stream per column
    fold, weights per row fold, outputs leave the array once per piece. is: the stationary inputs
    load once per piece, weights stream per input column fold.
    """
    m, k, n = g.m, g.k, g.n
    mk, kn, mn = m * k * g.a_elem_bytes, k * n * g.b_elem_bytes, m * n * g.c_elem_bytes
    if df == "ws":
        ifr, flr, passes = mk * math.ceil(n / cols), kn * pieces, math.ceil(k / rows)
    elif df == "os":
        ifr, flr, passes = mk * math.ceil(n / cols), kn * math.ceil(m / rows), pieces
    else:
        ifr, flr, passes = mk * pieces, kn * math.ceil(m / cols), math.ceil(k / rows)
    return {"ifmap_read": ifr, "filter_read": flr, "ofmap_write": mn * passes, "ofmap_read": mn * (passes - 1)}
