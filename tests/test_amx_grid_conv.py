"""The AMX engine's stride-1 convs on a zero-gapped grid (cpu_amx_conv.c): the forward and input
gradient as implicit GEMMs reading tiles straight from the grid, the weight gradient from shifted
views of it.

They replace the patch GEMM (and, on the forward, the direct kernels) for the stride-1 convs they
measured faster on (forward and input gradient: at most 64 output channels; weight gradient: at
least 32 channels each way, gaps adding at most a fifth) when the AMX engine runs, so every way the work is split (weight gradient: by output channels, by input
channels, by K slices into private sums), every grid geometry (padding 0, 1, 2, unequal, kernels
wider than tall, output larger than input) and both weight-gradient result types must equal the
numpy reference, and the other engines' paths must give the same bits. Skips where this machine
cannot run the AMX engine.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.cpu_lib

if shutil.which(os.environ.get("CC") or "gcc") is None:  # pragma: no cover - machines without a compiler
    pytest.skip("no C compiler to build the CPU kernel library", allow_module_level=True)

from gpu_backend.lib import available_engines, engine_library  # noqa: E402
from nitisim.contract import numerics as nm  # noqa: E402
from nitisim.contract.errors import IntegerOverflowError  # noqa: E402
from test_c_kernels import rand_i8, ref_conv_forward, ref_conv_input_grad, ref_conv_weight_grad  # noqa: E402

if "amx" not in available_engines():
    pytest.skip("this machine cannot run the AMX engine (CPU or OS)", allow_module_level=True)

CASES = [
    # batch, h, w, in_c, out_c, kernel, padding       what it exercises
    (2, 12, 12, 32, 32, (3, 3), (1, 1)),  # one tile each way: one thread, or K slices with 2
    (8, 16, 16, 32, 32, (3, 3), (1, 1)),  # 2,329 grid positions: two K slices split between threads
    (3, 16, 16, 128, 64, (3, 3), (1, 1)),  # weight grad: output channels split
    (8, 28, 28, 32, 96, (3, 3), (1, 1)),  # 4 K slices, 3 output tiles: K slices into private outputs, not a channel split
    (2, 14, 18, 32, 160, (3, 3), (1, 1)),  # ragged: 5 output tiles, 14 x 18 map (forward: patch GEMM)
    (2, 12, 12, 100, 40, (3, 3), (1, 1)),  # input channels split (4 column panels > 2 row tiles), ragged both
    (2, 24, 24, 48, 33, (5, 5), (2, 2)),  # padding 2: two gap pixels per row, 5 x 5 taps
    (2, 13, 22, 40, 36, (3, 5), (1, 2)),  # unequal kernel and padding
    (2, 6, 6, 64, 32, (3, 3), (0, 0)),  # no padding: no gaps, a 4 x 4 output
    (1, 5, 5, 32, 32, (1, 1), (0, 0)),  # 1 x 1 conv: one tap
    (4, 12, 12, 64, 64, (2, 2), (1, 1)),  # even kernel, output larger than the input
    (2, 8, 8, 16, 16, (3, 3), (1, 1)),  # 16 channels: forward and input grad only (48-byte kernel rows)
    (2, 30, 30, 24, 40, (3, 3), (1, 1)),  # 72-byte kernel rows, many 128-row forward blocks
    (2, 8, 8, 128, 64, (3, 3), (1, 1)),  # 8 x 8: the weight grad's gaps too wide, the patch GEMM's
]


@pytest.fixture(scope="module")
def amx():
    lib = engine_library("amx")
    yield lib
    lib.set_engine("auto")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,h,w,c,o,kernel,padding", CASES)
def test_grid_convs_match_reference(amx, threads, n, h, w, c, o, kernel, padding):
    amx.set_engine("amx")
    amx.set_num_threads(threads)
    rng = np.random.default_rng(n * h * w * c + o)
    kh, kw = kernel
    x, wt = rand_i8(rng, (n, h, w, c)), rand_i8(rng, (o, kh, kw, c))
    assert np.array_equal(amx.conv2d_forward(x, wt, 1, padding), ref_conv_forward(x, wt, (1, 1), padding))
    eh, ew = amx.conv_output_hw((h, w), kernel, (1, 1), padding)
    dy = rand_i8(rng, (n, eh, ew, o))
    dx = amx.conv2d_input_grad(dy, wt, (h, w), 1, padding)
    assert np.array_equal(dx, ref_conv_input_grad(dy, wt, (h, w), (1, 1), padding))
    ref = ref_conv_weight_grad(x, dy, kh, kw, (1, 1), padding)
    assert np.array_equal(amx.conv2d_weight_grad(x, dy, kernel, 1, padding), ref)
    assert np.array_equal(amx.conv2d_weight_grad(x, dy, kernel, 1, padding, out_dtype=np.int32), ref)


def test_grid_convs_at_extremes_agree_with_the_other_paths(amx):
    """All products at the int8 extremes, against the VNNI engine's paths on the same input."""
    rng = np.random.default_rng(5)
    x = np.where(rand_i8(rng, (4, 16, 16, 64)) > 0, 127, -128).astype(np.int8)
    wt = np.where(rand_i8(rng, (96, 3, 3, 64)) > 0, -128, 127).astype(np.int8)
    dy = np.where(rand_i8(rng, (4, 16, 16, 96)) > 0, -128, 127).astype(np.int8)
    amx.set_num_threads(2)

    def all_three():
        return (amx.conv2d_forward(x, wt, 1, 1), amx.conv2d_input_grad(dy, wt, (16, 16), 1, 1),
                amx.conv2d_weight_grad(x, dy, 3, 1, 1))

    amx.set_engine("amx")
    grid = all_three()
    amx.set_engine(amx.kernel_isa)
    other = all_three()
    refs = (ref_conv_forward(x, wt, (1, 1), (1, 1)), ref_conv_input_grad(dy, wt, (16, 16), (1, 1), (1, 1)),
            ref_conv_weight_grad(x, dy, 3, 3, (1, 1), (1, 1)))
    for mine, theirs, ref in zip(grid, other, refs):
        assert np.array_equal(mine, theirs) and np.array_equal(mine, ref)


def test_grid_weight_grad_beyond_the_int32_bound(amx):
    """135,200 output pixels: the int64 form is exact past int32, the int32 form refuses the overflow."""
    amx.set_engine("amx")
    amx.set_num_threads(2)
    x = np.full((2, 260, 260, 32), 127, np.int8)
    dy = np.full((2, 260, 260, 32), 127, np.int8)
    dy[..., 1] = -127
    g = amx.conv2d_weight_grad(x, dy, 1, 1, 0)
    assert g[0, 0, 0, 0] == 127 * 127 * 135200 > nm.INT32_MAX and g[1, 0, 0, 0] == -g[0, 0, 0, 0]
    assert np.array_equal(g, ref_conv_weight_grad(x, dy, 1, 1, (1, 1), (0, 0)))
    with pytest.raises(IntegerOverflowError, match="int32 accumulator overflow"):
        amx.conv2d_weight_grad(x, dy, 1, 1, 0, out_dtype=np.int32)


def test_grid_convs_on_an_empty_batch(amx):
    """No images: no grid at all (without padding not even its lead), and the weight gradient is zeros."""
    amx.set_engine("amx")
    x, wt = np.zeros((0, 6, 6, 64), np.int8), np.zeros((32, 3, 3, 64), np.int8)
    assert amx.conv2d_forward(x, wt, 1, 0).shape == (0, 4, 4, 32)
    g = amx.conv2d_weight_grad(x, np.zeros((0, 4, 4, 32), np.int8), 3, 1, 0)
    assert g.shape == (32, 3, 3, 64) and not g.any()
