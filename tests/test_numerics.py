"""The spec's test vectors and property tests of the NITI arithmetic (nitisim/contract/numerics.py)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nitisim.contract import numerics as nm

PSR_NEAREST_VECTORS = [  # (input, s, PSR, nearest) after the int8 clamp, spec §2
    (1000, 5, 32, 31), (-1000, 5, -32, -31), (7, 1, 4, 4), (7, 2, 1, 2), (6, 2, 2, 2),
    (37, 3, 4, 5), (-37, 3, -4, -5), (4095, 5, 127, 127), (100000, 12, 24, 24),
]
UP_PATTERNS = {2: "0010", 3: "00101011", 4: "0000100011001110"}
LOSS_LOGITS = np.array([[100, -20, 30, 127, -127, 0, 5, 60, 90, -50]], dtype=np.int8)
LOSS_VECTORS = {
    -4: [367, 0, 1, -572, 0, 0, 0, 21, 183, 0],
    -6: [437, 109, 109, -1608, 26, 109, 109, 218, 437, 54],
    -8: [266, 167, 204, -1750, 113, 181, 185, 229, 256, 149],
}


@pytest.mark.parametrize("x,s,psr,nearest", PSR_NEAREST_VECTORS)
def test_rounding_vectors(x, s, psr, nearest):
    v = np.array([x])
    assert nm.clamp_int8(nm.round_shift(v, s, "pseudo_stochastic"))[0] == psr
    assert nm.clamp_int8(nm.round_shift(v, s, "nearest"))[0] == nearest


@pytest.mark.parametrize("s,pattern", UP_PATTERNS.items())
def test_psr_up_patterns(s, pattern):
    r = np.arange(2**s)
    ups = nm.round_shift(r, s, "pseudo_stochastic")  # q = 0, so the result is the up bit
    assert "".join(str(int(u)) for u in ups) == pattern


@pytest.mark.parametrize("e,expected", LOSS_VECTORS.items())
def test_loss_vectors(e, expected):
    p = nm.loss_grad(LOSS_LOGITS, e, np.array([3]), return_p=True)
    assert p[0].tolist() == expected


def test_fine_loss_is_closer_to_float_softmax():
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (64, 10)).astype(np.int8)
    labels = rng.integers(0, 10, 64)
    for e in (-4, -5, -6, -7, -8):
        x = a * 2.0**e
        sm = np.exp(x - x.max(1, keepdims=True))
        sm /= sm.sum(1, keepdims=True)
        sm[np.arange(64), labels] -= 1
        exact = sm * 2048
        err_niti = np.abs(nm.loss_grad(a, e, labels, return_p=True) - exact).mean()
        err_fine = np.abs(nm.loss_grad(a, e, labels, return_p=True, variant="fine") - exact).mean()
        assert err_fine < err_niti
        assert err_fine < 2.0  # LSBs of p (1/2048)


@pytest.mark.parametrize("variant", ["niti", "fine"])
@pytest.mark.parametrize("e", [-30, -12, -8, -7, -6, -3, 0, 2])
def test_loss_rows_sum_to_zero_and_error_is_int8(variant, e):
    rng = np.random.default_rng(1)
    a = rng.integers(-127, 128, (32, 10)).astype(np.int8)
    labels = rng.integers(0, 10, 32)
    p = nm.loss_grad(a, e, labels, variant=variant, return_p=True)
    assert (p.sum(axis=1) == 0).all()
    assert (p[np.arange(32), labels] <= 0).all()
    err = nm.loss_grad(a, e, labels, variant=variant, seed=3, step=4, tensor_id=5)
    assert err.dtype == np.int8 and err.min() >= -127


ints = st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1)
shifts = st.integers(min_value=1, max_value=24)


@given(st.lists(ints, min_size=1, max_size=50), shifts, st.sampled_from(nm.ROUNDING_MODES), st.integers(0, 2**31))
@settings(max_examples=200, deadline=None)
def test_round_shift_bounds_and_sign_symmetry(xs, s, mode, seed):
    x = np.array(xs, dtype=np.int64)
    y = nm.round_shift(x, s, mode, seed=seed)
    trunc = np.sign(x) * (np.abs(x) >> s)
    assert ((y - trunc) * np.sign(x) >= 0).all() and (np.abs(y - trunc) <= 1).all()
    if mode != "stochastic":  # deterministic modes are odd functions; stochastic draws per element
        assert (nm.round_shift(-x, s, mode) == -y).all()


@given(st.lists(ints, min_size=1, max_size=50), shifts)
def test_nearest_is_within_half_lsb(xs, s):
    x = np.array(xs, dtype=np.int64)
    y = nm.round_shift(x, s, "nearest")
    assert (np.abs(y * 2**s - x) <= 2 ** (s - 1)).all()


@pytest.mark.parametrize("x,s", [(1, 1), (3, 2), (1000, 5), (-77, 4), (12345, 9)])
def test_stochastic_rounding_is_unbiased(x, s):
    n = 40_000
    y = nm.round_shift(np.full(n, x), s, "stochastic", seed=11, step=7, tensor_id=3)
    p = (abs(x) % 2**s) / 2**s
    sigma = np.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(y.mean() - x / 2**s) < 5 * sigma + 1e-9


def test_psr_bias_is_the_known_one():
    # Spec: PSR is biased, about +0.25 LSB at s=1 and -0.125 at s=2, averaged over remainders.
    for s, bias in ((1, 0.25), (2, -0.125)):
        x = np.arange(0, 2**12)
        err = nm.round_shift(x, s, "pseudo_stochastic") - x / 2**s
        assert err.mean() == pytest.approx(bias, abs=1e-9)


@given(st.lists(ints, min_size=1, max_size=30))
def test_range_bits_is_ceil_log2(xs):
    x = np.array(xs, dtype=np.int64)
    peak = int(np.abs(x).max())
    b = nm.range_bits(x)
    assert (peak == 0 and b == 0) or (2 ** (b - 1) < peak <= 2**b) or (peak == 1 and b == 0)


@given(st.lists(ints, min_size=1, max_size=30), st.integers(-40, 10), st.sampled_from(nm.ROUNDING_MODES))
def test_requantize_lands_in_int8_and_keeps_value(xs, exp, mode):
    acc = np.array(xs, dtype=np.int32)
    m, e = nm.requantize(acc, exp, mode, seed=1)
    assert m.dtype == np.int8 and m.min() >= -127
    assert e >= exp
    s = e - exp
    assert (np.abs(m.astype(np.int64) * 2**s - acc) <= max(2**s, 1) + 2**s).all()


def test_hash_is_counter_based_and_distinct():
    a = nm.hash_bits(1, 2, 3, 1000)
    assert (a == nm.hash_bits(1, 2, 3, 1000)).all()
    assert (a != nm.hash_bits(1, 2, 4, 1000)).mean() > 0.99
    assert (a != nm.hash_bits(1, 3, 3, 1000)).mean() > 0.99
    assert len(set(a.tolist())) == 1000


def test_hash_reference_values():
    # Pinned values: the C and CUDA builds are checked against these same numbers.
    assert int(nm.mix32(1)) == 1753845952
    assert nm.hash_key(0, 0, 0) == 0
    assert nm.hash_bits(42, 7, 3, 4).tolist() == nm.mix32(np.arange(4, dtype=np.uint32) ^ np.uint32(nm.hash_key(42, 7, 3))).tolist()


def test_mu_step_bounds_the_update():
    rng = np.random.default_rng(0)
    for mu in range(0, 7):
        g = rng.integers(-(2**30), 2**30, 500)
        step = nm.mu_step(g, mu)
        assert np.abs(step).max() <= 2**mu
        assert (np.sign(step) * np.sign(g) >= 0).all()
    assert (nm.mu_step(np.zeros(5, np.int64), 3) == 0).all()


def test_update_rules_stay_in_int8():
    rng = np.random.default_rng(2)
    w = rng.integers(-127, 128, 1000).astype(np.int8)
    g = rng.integers(-(2**28), 2**28, 1000)
    assert nm.update_plain(w, g, 5).min() >= -127
    w2, v = nm.update_momentum(w, g, np.zeros(1000, np.int32), 5)
    assert w2.dtype == np.int8 and v.dtype == np.int32 and w2.min() >= -127
    w3, sh = nm.update_shadow16(w.astype(np.int16) << 8, g, 5)
    assert w3.dtype == np.int8 and sh.dtype == np.int16 and w3.min() >= -127


def test_shadow16_keeps_sub_lsb_steps():
    # A gradient too small to move the int8 weight still moves the shadow, and accumulates.
    w, sh = np.array([10], np.int8), np.array([10 << 8], np.int16)
    for _ in range(150):  # |g| = 2: b(g) = 1, so the step is g itself (|g| = 1 has b = 0: no step)
        w, sh = nm.update_shadow16(sh, np.array([2]), 0)
    assert sh[0] == (10 << 8) - 300 and w[0] == 9


def test_momentum_velocity_decays_to_zero_without_gradient():
    # A velocity below 8 must still decay (truncating v / 8 would keep it, and its weight, moving forever).
    w = np.array([0, 0, 0, 0, 0], np.int8)
    v = np.array([2, 7, -5, 100, -1000], np.int32)
    for _ in range(100):
        w, v = nm.update_momentum(w, np.zeros(5, np.int64), v, 3)
    assert v.tolist() == [0, 0, 0, 0, 0]
    w_before = w.copy()
    w, v = nm.update_momentum(w, np.zeros(5, np.int64), v, 3)
    assert (w == w_before).all()
