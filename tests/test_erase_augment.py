"""Cutout (random erasing) as an integer augmentation: the counter-hash centre draws, the clipped
square each image loses, the erase_size config key and its checks, and that the training batches
(the ones the integer backends and the float32 twin both read) carry the squares."""

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.datasets.transforms import erase_box, erase_draws, random_erase
from nitisim.contract.numerics import hash_bits
from nitisim.train.data import epoch_batches, load_for_config

ERASE_TAG = 0x45524153  # transforms._TAG_ERASE, restated: the draws are part of a run's definition


def _images(n=64, h=28, w=28, c=1, seed=0):
    # every pixel nonzero, so a 0 can only come from the erase
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, c), dtype=np.uint8)


def _expected_mask(cy, cx, size, h, w):
    """The erased pixels written out the slow way, one pixel at a time, from the square's definition."""
    mask = np.zeros((h, w), bool)
    for r in range(h):
        for c in range(w):
            mask[r, c] = cy - size // 2 <= r < cy - size // 2 + size and cx - size // 2 <= c < cx - size // 2 + size
    return mask


def test_draws_are_the_counter_hash_as_documented():
    n, h, w, seed, step = 9, 28, 20, 11, 1234
    words = hash_bits(seed, step, ERASE_TAG, 2 * n).astype(np.uint64)
    cy, cx = erase_draws(n, h, w, rng_seed=seed, step=step)
    assert cy.tolist() == [int(v * h >> 32) for v in words[:n]]
    assert cx.tolist() == [int(v * w >> 32) for v in words[n:]]


def test_centres_cover_the_whole_image_so_squares_get_clipped():
    cy, cx = erase_draws(28 * 200, 28, 28, rng_seed=5, step=3)
    for centres in (cy, cx):
        counts = np.bincount(centres, minlength=28)
        assert counts.shape == (28,) and counts.min() > 120  # 200 expected each, border rows included
    top, bottom, left, right = erase_box(cy, cx, 8, 28, 28)
    areas = (bottom - top) * (right - left)
    assert areas.max() == 64 and areas.min() == 16  # whole squares and quarter squares at the corners
    assert ((bottom - top) < 8).any() and ((right - left) < 8).any()


@pytest.mark.parametrize("size", [1, 7, 8, 12, 28])
def test_square_is_zeroed_with_its_clipped_shape_and_nothing_else_changes(size):
    images = _images(200, 28, 28, 3)
    out = random_erase(images, size, rng_seed=2, step=17)
    cy, cx = erase_draws(200, 28, 28, rng_seed=2, step=17)
    assert out.shape == images.shape and out.dtype == images.dtype
    clipped = 0
    for i in range(200):
        mask = _expected_mask(int(cy[i]), int(cx[i]), size, 28, 28)
        assert (out[i][mask] == 0).all(), f"image {i}: the square is not all zero"
        np.testing.assert_array_equal(out[i][~mask], images[i][~mask], err_msg=f"image {i}")
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        # a rectangle: its rows and columns are runs, min(size, room to the border) long
        assert mask.sum() == len(rows) * len(cols)
        assert len(rows) == min(cy[i] - size // 2 + size, 28) - max(cy[i] - size // 2, 0)
        assert len(cols) == min(cx[i] - size // 2 + size, 28) - max(cx[i] - size // 2, 0)
        clipped += mask.sum() < size * size
    assert size == 1 or clipped > 0  # the border cases were exercised


def test_known_centres_give_known_boxes():
    top, bottom, left, right = erase_box(np.array([0, 27, 14, 3]), np.array([0, 27, 14, 0]), 8, 28, 28)
    assert top.tolist() == [0, 23, 10, 0] and bottom.tolist() == [4, 28, 18, 7]
    assert left.tolist() == [0, 23, 10, 0] and right.tolist() == [4, 28, 18, 4]
    top, bottom, _, _ = erase_box(np.array([0, 14]), np.array([0, 14]), 7, 28, 28)  # odd: exactly 7 rows
    assert (bottom - top).tolist() == [4, 7]


def test_same_seed_and_step_same_squares_other_step_or_seed_other_squares():
    images = _images(64)
    a = random_erase(images, 8, rng_seed=4, step=10)
    np.testing.assert_array_equal(a, random_erase(images, 8, rng_seed=4, step=10))
    assert not np.array_equal(a, random_erase(images, 8, rng_seed=4, step=11))
    assert not np.array_equal(a, random_erase(images, 8, rng_seed=5, step=10))


def test_size_zero_is_the_identity_and_the_input_is_never_written():
    images = _images(16, 5, 6, 2)
    before = images.copy()
    out = random_erase(images, 0, rng_seed=0, step=0)
    np.testing.assert_array_equal(out, images)
    random_erase(images, 3, rng_seed=0, step=0)
    np.testing.assert_array_equal(images, before)


def test_bad_arguments():
    with pytest.raises(ValueError, match="erase size"):
        random_erase(_images(2), -1, rng_seed=0, step=0)
    with pytest.raises(TypeError, match="integer"):
        random_erase(np.zeros((2, 4, 4, 1), np.float32), 2, rng_seed=0, step=0)
    with pytest.raises(ValueError, match="non-negative"):
        erase_draws(2, 4, 4, rng_seed=0, step=-1)


# the small VGG-on-synthetic config of the crop/flip tests, and its parser
from test_augment import BASE, _cfg  # noqa: E402


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_batches_are_erased_after_the_crop_and_flip(augment):
    crop = "augment: crop_flip\ncrop_pad: 2\n" if augment == "crop_flip" else ""
    cfg, unerased = _cfg(crop + "erase_size: 8\n"), _cfg(crop)
    ds = load_for_config(cfg, None)
    for (step, a, la), (_, b, lb) in zip(epoch_batches(ds, cfg, 0), epoch_batches(ds, unerased, 0)):
        np.testing.assert_array_equal(la, lb)  # cutout never changes the order or the labels
        np.testing.assert_array_equal(a, random_erase(b, 8, rng_seed=cfg.seed, step=step))
        assert not np.array_equal(a, b)


def test_config_key_default_and_resume_hash():
    off, on = _cfg(), _cfg("erase_size: 8\n")
    assert off.erase_size == 0 and on.erase_size == 8
    assert "erase_size" not in off.to_dict()  # configs without cutout keep the resume hash they had
    assert _cfg("erase_size: 0\n").step_hash("int8") == off.step_hash("int8")
    assert on.to_dict()["erase_size"] == 8 and on.step_hash("int8") != off.step_hash("int8")
    assert _cfg("erase_size: 28\n").erase_size == 28  # the whole side of a 28x28 input is allowed


@pytest.mark.parametrize("value,words", [
    ("-1", "must be in 0..28"),
    ("29", "must be in 0..28"),  # wider than the model's 28x28 input
    ("eight", "must be an integer"),
    ("true", "must be an integer"),
    ("8.0", "must be an integer"),
    ("null", "must be an integer"),
])
def test_bad_erase_size_is_one_line_naming_file_and_field(tmp_path, capsys, value, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BASE + f"erase_size: {value}\n")
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0] and "erase_size" in err[0] and words in err[0]
