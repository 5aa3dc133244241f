"""The fused conv + requantize of the C library (niti_conv2d_forward_requantize and
niti_conv2d_input_grad_requantize) equals the conv followed by requantize, bit for bit, on every
GEMM engine this machine runs; and the C kernel table's PendingAccumulator path equals the unfused
table on whole training steps. No timing here."""
from __future__ import annotations

import numpy as np
import pytest

from nitisim.contract import numerics as nm
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import builtin_models

from test_c_kernels import any_lib, lib, rand_i8, ref_conv_forward  # noqa: F401 (fixtures)

pytestmark = pytest.mark.cpu_lib

MODES = ("nearest", "pseudo_stochastic", "stochastic")
FUSED_CASES = [
    # batch, h, w, in_c, out_c, kernel, stride, padding
    # a 32x32x128 int32 map is 512 KiB an image: 2 images a 1 MiB slice, 9 images 5 slices (ragged)
    (9, 32, 32, 3, 128, (3, 3), (1, 1), (1, 1)),
    (37, 28, 28, 1, 6, (5, 5), (1, 1), (0, 0)),  # LeNet's first conv: 37 images fit one slice
    (5, 17, 15, 4, 40, (3, 3), (2, 2), (1, 1)),  # strided, odd sizes
    (7, 24, 24, 64, 96, (3, 3), (1, 1), (1, 1)),  # GEMM path, several slices
    # 256 x 3 x 3 x 256 = 576 KiB of weights: past FUSED_MAX_WEIGHT_BYTES, the whole-tensor path
    (3, 6, 6, 256, 256, (3, 3), (1, 1), (1, 1)),
]


def _inputs(seed: int, n, h, w, c, o, kernel, late_peak: bool):
    """x and w; with `late_peak`, the last image is all 127 so its slice's range is the widest and
    every earlier slice was requantized with a smaller shift and must be redone."""
    rng = np.random.default_rng(seed)
    x, wt = rand_i8(rng, (n, h, w, c), -20, 20), rand_i8(rng, (o, *kernel, c), -30, 30)
    if late_peak:
        x[-1] = 127
    return x, wt


@pytest.mark.parametrize("late_peak", [False, True], ids=["even", "late-peak"])
@pytest.mark.parametrize("n,h,w,c,o,kernel,stride,padding", FUSED_CASES)
def test_fused_forward_equals_conv_then_requantize(any_lib, n, h, w, c, o, kernel, stride, padding, late_peak):
    x, wt = _inputs(n * h + o, n, h, w, c, o, kernel, late_peak)
    acc = any_lib.conv2d_forward(x, wt, stride, padding)
    for mode in MODES:
        want = any_lib.requantize(acc, -9, mode, seed=4, step=11, tensor_id=23)
        got = any_lib.conv2d_forward_requantize(x, wt, stride, padding, -9, mode, seed=4, step=11, tensor_id=23)
        assert got[1] == want[1] and got[0].dtype == np.int8 and np.array_equal(got[0], want[0]), mode


@pytest.mark.parametrize("late_peak", [False, True], ids=["even", "late-peak"])
@pytest.mark.parametrize("n,h,w,c,o,kernel,stride,padding", FUSED_CASES)
def test_fused_input_grad_equals_conv_then_requantize(any_lib, n, h, w, c, o, kernel, stride, padding, late_peak):
    x, wt = _inputs(n * w + c, n, h, w, c, o, kernel, False)
    e, f = any_lib.conv_output_hw((h, w), kernel, stride, padding)
    dy = rand_i8(np.random.default_rng(n), (n, e, f, o), -15, 15)
    if late_peak:
        dy[-1] = 127
    acc = any_lib.conv2d_input_grad(dy, wt, (h, w), stride, padding)
    for mode in MODES:
        want = any_lib.requantize(acc, 3, mode, seed=1, step=2, tensor_id=5)
        got = any_lib.conv2d_input_grad_requantize(dy, wt, (h, w), stride, padding, 3, mode, seed=1, step=2,
                                                   tensor_id=5)
        assert got[1] == want[1] and np.array_equal(got[0], want[0]), mode


def test_fused_matches_numerics_and_any_thread_count(lib):
    x, wt = _inputs(3, 9, 32, 32, 3, 128, (3, 3), late_peak=True)
    m, e = nm.requantize(ref_conv_forward(x, wt, (1, 1), (1, 1)), 0, "stochastic", seed=8, step=9, tensor_id=10)
    try:
        for threads in (1, 2, 3):
            lib.set_num_threads(threads)
            got = lib.conv2d_forward_requantize(x, wt, 1, 1, 0, "stochastic", seed=8, step=9, tensor_id=10)
            assert got[1] == e and np.array_equal(got[0], m), threads
    finally:
        lib.set_num_threads(0)


def test_fused_empty_batch_and_bad_arguments(lib):
    m, e = lib.conv2d_forward_requantize(np.zeros((0, 5, 5, 3), np.int8), np.zeros((4, 3, 3, 3), np.int8), 1, 1, 7,
                                         "nearest")
    assert m.shape == (0, 5, 5, 4) and e == 7
    with pytest.raises(ValueError, match="channels differ"):
        lib.conv2d_forward_requantize(np.zeros((1, 5, 5, 3), np.int8), np.zeros((4, 3, 3, 2), np.int8), 1, 1, 0,
                                      "nearest")
    with pytest.raises(ValueError, match="does not match"):
        lib.conv2d_input_grad_requantize(np.zeros((1, 5, 5, 3), np.int8), np.zeros((4, 3, 3, 2), np.int8), (5, 5),
                                         1, 1, 0, "nearest")


def test_pending_accumulator_materializes_the_conv(lib):
    from gpu_backend.backends import cpu_kernel_table

    table = cpu_kernel_table()
    graph = build_graph(builtin_models()["lenet"], 4)
    node = next(n for n in graph.nodes if n.op == "conv2d")
    x, wt = _inputs(5, 4, 28, 28, 1, 6, (5, 5), False)
    (acc,) = table["conv2d"](node, StepContext(), nm.QTensor(x, -8), nm.QTensor(wt, -7))
    assert acc.m.shape == (4, 24, 24, 6) and acc.m.dtype == np.int32 and acc.e == -15
    assert np.array_equal(np.asarray(acc.m), lib.conv2d_forward(x, wt, 1, 0))
    with pytest.raises(ValueError, match="channels differ"):  # checked at the conv, not at its reader
        table["conv2d"](node, StepContext(), nm.QTensor(x, -8), nm.QTensor(wt[:, :, :, :0], -7))


@pytest.mark.parametrize("model_name", ["lenet", "vgg-small-7"])
def test_fused_table_steps_equal_unfused(model_name):
    from gpu_backend.backends import cpu_kernel_table

    model = builtin_models()[model_name]
    batch = 3 if model_name.startswith("vgg") else 16  # vgg: 3 images of 512 KiB maps, two slices
    graph = build_graph(model, batch, NumericsOptions("stochastic", "pseudo_stochastic", "fine", "shadow16"))
    rng = np.random.default_rng(0)
    x = nm.QTensor(rng.integers(-127, 128, (batch, *model.input_shape), dtype=np.int8), -8)
    labels = rng.integers(0, model.classes, batch).astype(np.int32)
    runs = []
    for fuse in (True, False):
        table, params, tensors = cpu_kernel_table(fuse_requantize=fuse), init_params(graph, 0), []
        for step in range(1, 3):
            r = train_step(graph, table, params, x, labels, StepContext(seed=1, step=step, mu=2),
                           keep=tuple(n.outputs[0] for n in graph.nodes if n.op == "requantize"))
            params = r.params
            tensors.append({k: (np.asarray(t.m), t.e) for k, t in r.tensors.items()})
        runs.append((params, tensors))
    (p_fused, t_fused), (p_plain, t_plain) = runs
    assert set(p_fused) == set(p_plain)
    for name in p_fused:
        assert p_fused[name].e == p_plain[name].e and np.array_equal(p_fused[name].m, p_plain[name].m), name
    for a, b in zip(t_fused, t_plain):
        assert a.keys() == b.keys() and a
        for name in a:
            assert a[name][1] == b[name][1] and np.array_equal(a[name][0], b[name][0]), name
