"""The numpy reference executor: integer-only steps, and its layers against torch autograd."""
import numpy as np
import pytest
import torch

from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.executor import StepContext, forward_logits, predict, train_step
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import Conv, Flatten, Linear, MaxPool, ModelSpec, ReLU, builtin_models
from nitisim.contract.numerics import QTensor
from nitisim.contract.reference import REFERENCE_KERNELS, exact_int_matmul
from nitisim.contract import reference as ref

RNG = np.random.default_rng(1234)


def rand_q(shape, e=-7, lo=-127, hi=128):
    return QTensor(RNG.integers(lo, hi, shape).astype(np.int8), e)


def run_steps(model, batch, options=None, steps=2, keep_all=True):
    g = build_graph(model, batch, options)
    params = init_params(g, seed=0)
    x = rand_q((batch, *model.input_shape), -8)
    labels = RNG.integers(0, model.classes, batch).astype(np.int32)
    result = None
    for step in range(steps):
        result = train_step(g, REFERENCE_KERNELS, params, x, labels, StepContext(seed=5, step=step, mu=3),
                            keep=list(g.tensors) if keep_all else ())
        params = result.params
    return g, result


@pytest.mark.parametrize("update_rule", ["plain", "momentum", "shadow16"])
@pytest.mark.parametrize("modes", [("pseudo_stochastic", "pseudo_stochastic", "niti"), ("stochastic", "nearest", "fine")])
def test_every_array_of_a_step_is_integer(update_rule, modes):
    opts = NumericsOptions(modes[0], modes[1], modes[2], update_rule)
    model = ModelSpec("small", (12, 12, 2), (Conv(4, 3, 1, 1), ReLU(), MaxPool(2, 2), Conv(6, 3, 2, 1), ReLU(),
                                              Flatten(), Linear(16), ReLU(), Linear(10)))
    g, result = run_steps(model, 5, opts)
    seen = 0
    for name, t in {**result.tensors, **result.params}.items():
        arr = t.m if isinstance(t, QTensor) else t
        assert np.issubdtype(arr.dtype, np.integer), name
        assert isinstance(getattr(t, "e", 0), int), name
        if isinstance(t, QTensor):
            assert arr.dtype == np.dtype(g.tensor(name).dtype), name
        seen += 1
    assert seen == len(g.tensors)


def test_lenet_step_changes_weights_and_is_deterministic():
    model = builtin_models()["lenet"]
    _, r1 = run_steps(model, 4, steps=1, keep_all=False)
    global RNG
    RNG = np.random.default_rng(1234)
    _, r2 = run_steps(model, 4, steps=1, keep_all=False)
    RNG = np.random.default_rng(1234)
    _, r3 = run_steps(model, 4, steps=1, keep_all=False)
    assert all((r2.params[k].m == r3.params[k].m).all() for k in r2.params)
    g = build_graph(model, 4)
    init = init_params(g, 0)
    assert any((init[k].m != r2.params[k].m).any() for k in g.weights)


def _torch(t: QTensor, requires_grad=False):
    return torch.tensor(t.dequantize(), dtype=torch.float64, requires_grad=requires_grad)


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 2, 5), (1, 0, 1)])
def test_conv_forward_and_backward_against_autograd(stride, padding, kernel):
    model = ModelSpec("c", (9, 9, 3), (Conv(4, 3, 1, 1), Conv(5, kernel, stride, padding), Flatten(), Linear(10)))
    g = build_graph(model, 2)
    fwd = next(n for n in g.nodes if n.name == "conv2.fwd")
    ig = next(n for n in g.nodes if n.name == "conv2.in_grad")
    wg = next(n for n in g.nodes if n.name == "conv2.w_grad")
    x, w = rand_q(g.tensor("conv1.out").shape, -6), rand_q(g.tensor("conv2.w").shape, -9)
    dy = rand_q(g.tensor("conv2.out").shape, -8)
    ctx = StepContext()
    (acc,) = ref.REFERENCE_KERNELS["conv2d"](fwd, ctx, x, w)
    (dx,) = ref.REFERENCE_KERNELS["conv2d_input_grad"](ig, ctx, dy, w)
    (dw,) = ref.REFERENCE_KERNELS["conv2d_weight_grad"](wg, ctx, x, dy)

    xt, wt = _torch(x, True), _torch(w, True)
    yt = torch.nn.functional.conv2d(xt.permute(0, 3, 1, 2), wt.permute(0, 3, 1, 2), stride=stride, padding=padding)
    yt = yt.permute(0, 2, 3, 1)
    yt.backward(_torch(dy))
    # The accumulators are exact: int8 x int8 sums in int32 equal the float64 results to the bit.
    assert np.array_equal(acc.dequantize(), yt.detach().numpy())
    assert np.array_equal(dx.dequantize(), xt.grad.numpy())
    assert np.array_equal(dw.dequantize(), wt.grad.numpy())
    # After the shift back to int8 the error is within one LSB of the requantized exponent.
    (dx8,) = ref.REFERENCE_KERNELS["requantize"](next(n for n in g.nodes if n.name == "conv2.in_grad.requant"), ctx, dx)
    assert np.abs(dx8.dequantize() - xt.grad.numpy()).max() <= 2.0**dx8.e


def test_linear_forward_and_backward_against_autograd():
    model = ModelSpec("l", (1, 1, 30), (Flatten(), Linear(20), Linear(10)))
    g = build_graph(model, 6)
    x, w, dy = rand_q((6, 20), -5), rand_q((10, 20), -8), rand_q((6, 10), -7)
    ctx = StepContext()
    (acc,) = ref.REFERENCE_KERNELS["linear"](next(n for n in g.nodes if n.name == "fc2.fwd"), ctx, x, w)
    (dx,) = ref.REFERENCE_KERNELS["linear_input_grad"](next(n for n in g.nodes if n.name == "fc2.in_grad"), ctx, dy, w)
    (dw,) = ref.REFERENCE_KERNELS["linear_weight_grad"](next(n for n in g.nodes if n.name == "fc2.w_grad"), ctx, x, dy)
    xt, wt = _torch(x, True), _torch(w, True)
    yt = xt @ wt.T
    yt.backward(_torch(dy))
    assert np.array_equal(acc.dequantize(), yt.detach().numpy())
    assert np.array_equal(dx.dequantize(), xt.grad.numpy())
    assert np.array_equal(dw.dequantize(), wt.grad.numpy())


def test_relu_and_maxpool_backward_routes_to_first_max():
    model = ModelSpec("p", (4, 4, 1), (Conv(1, 1), ReLU(), MaxPool(2, 2), Flatten(), Linear(10)))
    g = build_graph(model, 1)
    x = QTensor(np.array([[3, 3, 0, -1], [1, 2, -5, -1], [7, 0, 2, 2], [0, 7, 2, 2]], np.int8).reshape(1, 4, 4, 1), -3)
    dy = QTensor(np.array([[10, 20], [30, 40]], np.int8).reshape(1, 2, 2, 1), -4)
    pool_bwd = next(n for n in g.nodes if n.op == "maxpool_grad")
    (dx,) = ref.REFERENCE_KERNELS["maxpool_grad"](pool_bwd, StepContext(), x, dy)
    expected = [[10, 0, 20, 0], [0, 0, 0, 0], [30, 0, 40, 0], [0, 0, 0, 0]]  # ties: first in row-major order
    assert dx.m.reshape(4, 4).tolist() == expected and dx.e == -4
    (y,) = ref.REFERENCE_KERNELS["maxpool"](next(n for n in g.nodes if n.op == "maxpool"), StepContext(), x)
    assert y.m.reshape(2, 2).tolist() == [[3, 0], [7, 2]]
    relu_bwd = next(n for n in g.nodes if n.op == "relu_grad")
    (dr,) = ref.REFERENCE_KERNELS["relu_grad"](relu_bwd, StepContext(), x, QTensor(np.ones((1, 4, 4, 1), np.int8), 0))
    assert dr.m.reshape(4, 4).tolist() == (x.m.reshape(4, 4) > 0).astype(int).tolist()


def _pool_oracle(x, k, s, p):
    """Max pool over x padded with -infinity, by its definition in plain Python: (y, dx routing) where
    routing maps each window to the input its error goes to (the first maximum, row-major, among the
    window's real positions)."""
    n, h, w, c = x.shape
    e, f = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y, route = np.zeros((n, e, f, c), np.int64), {}
    for b, oy, ox, ch in np.ndindex(n, e, f, c):
        best, at = None, None
        for ky in range(k):
            for kx in range(k):
                iy, ix = oy * s - p + ky, ox * s - p + kx
                if 0 <= iy < h and 0 <= ix < w and (best is None or int(x[b, iy, ix, ch]) > best):
                    best, at = int(x[b, iy, ix, ch]), (b, iy, ix, ch)
        assert best is not None  # padding < kernel: every window holds a real position
        y[b, oy, ox, ch], route[b, oy, ox, ch] = best, at
    return y, route


@pytest.mark.parametrize("k,s,hw", [(3, 2, (7, 7)), (3, 2, (8, 8)), (3, 2, (9, 6)), (3, 1, (5, 5)), (3, 1, (6, 7)),
                                    (2, 2, (5, 6)), (3, 3, (1, 2))])
@pytest.mark.parametrize("lo,hi", [(-127, 128), (-2, 2), (-127, -120)])  # ties; all negative: padding must not win
def test_padded_maxpool_against_an_oracle(k, s, hw, lo, hi):
    p = 1
    model = ModelSpec("p", (*hw, 3), (Conv(3, 1), MaxPool(k, s, p), Flatten(), Linear(10)))
    g = build_graph(model, 2)
    fwd, bwd = next(n for n in g.nodes if n.op == "maxpool"), next(n for n in g.nodes if n.op == "maxpool_grad")
    assert fwd.attr("padding") == bwd.attr("padding") == p
    x = rand_q((2, *hw, 3), -3, lo, hi)
    want_y, route = _pool_oracle(x.m, k, s, p)
    (y,) = REFERENCE_KERNELS["maxpool"](fwd, StepContext(), x)
    assert y.m.dtype == np.int8 and y.e == x.e and np.array_equal(y.m, want_y)
    assert y.m.shape == g.tensor("pool1.out").shape
    for dy_range in ((-127, 128), (100, 128)):  # large errors: overlapping windows saturate
        dy = rand_q(y.m.shape, -4, *dy_range)
        want_dx = np.zeros(x.m.shape, np.int64)
        for out_at, in_at in route.items():
            want_dx[in_at] += int(dy.m[out_at])
        (dx,) = REFERENCE_KERNELS["maxpool_grad"](bwd, StepContext(), x, dy)
        assert dx.m.dtype == np.int8 and dx.e == dy.e
        assert np.array_equal(dx.m, np.clip(want_dx, -127, 127))


def test_unpadded_pool_nodes_carry_no_padding_attribute():
    """Graphs of models without a padded pool keep the attributes they had (checkpoints name them)."""
    g = build_graph(builtin_models()["lenet"], 2)
    pools = [n for n in g.nodes if n.op in ("maxpool", "maxpool_grad")]
    assert pools and all(dict(n.attrs).keys() == {"kernel", "stride"} for n in pools)


def test_dropout_mask_is_shared_across_batch_and_matches_backward():
    model = ModelSpec("d", (1, 1, 64), (Flatten(), Linear(64), builtin_models()["vgg-small-7"].layers[-2], Linear(10)))
    g = build_graph(model, 3)
    fwd, bwd = g.nodes_of("dropout")[0], g.nodes_of("dropout_grad")[0]
    ones = QTensor(np.ones((3, 64), np.int8), -7)
    ctx = StepContext(seed=1, step=9)
    (y,) = ref.REFERENCE_KERNELS["dropout"](fwd, ctx, ones)
    (dx,) = ref.REFERENCE_KERNELS["dropout_grad"](bwd, ctx, ones)
    assert (y.m == y.m[0]).all() and np.array_equal(y.m, dx.m) and y.e == -6
    assert 16 < y.m[0].sum() < 48  # about half kept
    (y2,) = ref.REFERENCE_KERNELS["dropout"](fwd, StepContext(seed=1, step=10), ones)
    assert not np.array_equal(y.m, y2.m)


def test_exact_matmul_paths_agree_with_integer_matmul():
    for k in (3, 1000, 70_000):  # float32 path, float64 path, float64 path with a long reduction
        a = RNG.integers(-127, 128, (5, k)).astype(np.int8)
        b = RNG.integers(-127, 128, (k, 4)).astype(np.int8)
        assert np.array_equal(exact_int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_int32_overflow_raises():
    model = ModelSpec("o", (1, 1, 140_000), (Flatten(), Linear(10)))
    g = build_graph(model, 1, training=False)
    big = QTensor(np.full((1, 140_000), 127, np.int8), 0)
    params = {"fc1.w": QTensor(np.full((10, 140_000), 127, np.int8), 0)}
    with pytest.raises(IntegerOverflowError):
        forward_logits(g, REFERENCE_KERNELS, params, big)


def test_predict_uses_first_maximum():
    assert predict(QTensor(np.array([[1, 5, 5], [9, 0, 9]], np.int8), 0)).tolist() == [1, 0]
