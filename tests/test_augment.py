"""Integer data augmentation: the counter-hash draws, where crop and flip move pixels, the config
options (augment: crop | flip | crop_flip, crop_pad), and that a resumed augmented run is the
uninterrupted run bit for bit."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nitisim.cli import main
from nitisim.datasets.transforms import crop_flip_draws, random_crop_flip
from nitisim.contract.numerics import hash_bits
from nitisim.train.config import parse_config
from nitisim.train.data import epoch_batches, load_for_config

CROP_TAG = 0x43524F50  # transforms._TAG_CROP, restated: the draws are part of a run's definition


def test_draws_are_the_counter_hash_as_documented():
    n, pad, seed, step = 7, 3, 11, 1234
    words = hash_bits(seed, step, CROP_TAG, 3 * n).astype(np.uint64)
    flips, dy, dx = crop_flip_draws(n, pad, rng_seed=seed, step=step)
    assert flips.tolist() == [bool(w >> 31) for w in words[:n]]
    assert dy.tolist() == [int(w * 7 >> 32) for w in words[n:2 * n]]
    assert dx.tolist() == [int(w * 7 >> 32) for w in words[2 * n:]]


def test_draws_cover_every_offset_and_both_flips_and_change_with_step_and_seed():
    flips, dy, dx = crop_flip_draws(2000, 2, rng_seed=5, step=3)
    for offsets in (dy, dx):
        counts = np.bincount(offsets, minlength=5)
        assert counts.shape == (5,) and counts.min() > 300  # 400 expected each
    assert 900 < flips.sum() < 1100
    other_step = crop_flip_draws(2000, 2, rng_seed=5, step=4)
    other_seed = crop_flip_draws(2000, 2, rng_seed=6, step=3)
    for other in (other_step, other_seed):
        assert not np.array_equal(other[1], dy) and not np.array_equal(other[0], flips)
    # the flip mask does not depend on the padding
    np.testing.assert_array_equal(crop_flip_draws(2000, 4, rng_seed=5, step=3)[0], flips)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_moves_each_pixel_by_pad_minus_offset(flip):
    n, h, w, pad = 64, 6, 5, 2
    images = np.zeros((n, h, w, 1), np.uint8)
    r0, c0 = 2, 1
    images[:, r0, c0, 0] = 200  # one marked pixel per image
    out = random_crop_flip(images, pad, rng_seed=3, step=8, flip=flip)
    flips, dy, dx = crop_flip_draws(n, pad, rng_seed=3, step=8)
    flips &= flip
    assert out.shape == images.shape and out.dtype == np.uint8
    for i in range(n):
        r, c = r0 + pad - dy[i], c0 + pad - dx[i]  # where the crop puts it
        if flips[i]:
            c = w - 1 - c
        expected = np.zeros((h, w), np.uint8)
        if 0 <= r < h and 0 <= c < w:
            expected[r, c] = 200
        np.testing.assert_array_equal(out[i, :, :, 0], expected, err_msg=f"image {i}")
    assert (dy != pad).any() and (flips.any() == flip)  # some images really moved / were mirrored


def test_padding_is_zero_and_content_is_kept_in_order():
    x = np.arange(1, 1 + 4 * 4, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(32, axis=0)
    out = random_crop_flip(x, 1, rng_seed=0, step=0, flip=False)
    _, dy, dx = crop_flip_draws(32, 1, rng_seed=0, step=0)
    for i in range(32):
        padded = np.pad(x[i, :, :, 0], 1)
        np.testing.assert_array_equal(out[i, :, :, 0], padded[dy[i]:dy[i] + 4, dx[i]:dx[i] + 4])


def test_flip_only_mirrors_without_moving():
    x = np.random.default_rng(0).integers(1, 256, (40, 5, 5, 1), dtype=np.uint8)
    out = random_crop_flip(x, 0, rng_seed=2, step=2)
    flips, _, _ = crop_flip_draws(40, 0, rng_seed=2, step=2)
    np.testing.assert_array_equal(out[~flips], x[~flips])
    np.testing.assert_array_equal(out[flips], x[flips][:, :, ::-1])


ROOT = Path(__file__).resolve().parent.parent
BASE = f"""
model: {ROOT / "configs" / "models" / "vgg-small-fmnist.yaml"}
dataset: synthetic
synthetic: {{train: 64, test: 16}}
batch: 16
epochs: 1
mu_schedule: [{{from_epoch: 0, mu: 2}}]
"""


def _cfg(extra: str = ""):
    return parse_config(yaml.safe_load(BASE + extra), str(ROOT / "configs" / "train" / "x.yaml"))


@pytest.mark.parametrize("augment,pad,moves,mirrors", [
    ("none", None, False, False), ("crop", 2, True, False), ("flip", None, False, True), ("crop_flip", 2, True, True),
])
def test_config_modes_reach_the_batches(augment, pad, moves, mirrors):
    cfg = _cfg(f"augment: {augment}\n" + (f"crop_pad: {pad}\n" if pad else ""))
    plain = _cfg()
    ds = load_for_config(cfg, None)
    for (step, a, la), (_, b, lb) in zip(epoch_batches(ds, cfg, 0), epoch_batches(ds, plain, 0)):
        np.testing.assert_array_equal(la, lb)  # augmentation never changes the order or the labels
        expected = random_crop_flip(b, pad or 0, rng_seed=cfg.seed, step=step, flip=mirrors)
        np.testing.assert_array_equal(a, expected if augment != "none" else b)
        assert np.array_equal(a, b) == (not moves and not mirrors)
    if pad:
        assert cfg.to_dict()["crop_pad"] == pad
    else:
        assert "crop_pad" not in cfg.to_dict()  # configs without a crop keep their resume hash


@pytest.mark.parametrize("extra,key,words", [
    ("augment: none\ncrop_pad: 2\n", "crop_pad", "only used by augment"),
    ("augment: flip\ncrop_pad: 2\n", "crop_pad", "only used by augment"),
    ("augment: crop\ncrop_pad: 0\n", "crop_pad", "must be in 1..16"),
    ("augment: crop\ncrop_pad: 17\n", "crop_pad", "must be in 1..16"),
    ("augment: crop\ncrop_pad: two\n", "crop_pad", "must be an integer"),
    ("augment: rotate\n", "augment", "must be one of none, crop, flip, crop_flip"),
])
def test_bad_augment_options_name_the_field(tmp_path, capsys, extra, key, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BASE + extra)
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0] and key in err[0] and words in err[0]


TINY_AUGMENTED = """
model: tiny.yaml
dataset: synthetic
synthetic: {train: 96, test: 50}
batch: 32
epochs: 2
mu_schedule: [{from_epoch: 0, mu: 3}, {from_epoch: 1, mu: 2}]
loss_variant: fine
augment: crop_flip
crop_pad: 2
seed: 7
eval_batch: 25
"""
TINY_MODEL = """
input: [28, 28, 1]
layers:
  - conv: {out: 4, kernel: 3, padding: 1}
  - relu
  - maxpool: {kernel: 2, stride: 2}
  - flatten
  - linear: {out: 10}
"""


def _checkpoint(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def test_augmented_resume_is_the_uninterrupted_run(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_MODEL)
    config = tmp_path / "tiny-aug.yaml"
    config.write_text(TINY_AUGMENTED)
    straight, resumed, plain = tmp_path / "straight", tmp_path / "resumed", tmp_path / "plain"
    assert main(["train", str(config), "--backend", "numpy", "--out", str(straight)]) == 0
    assert main(["train", str(config), "--backend", "numpy", "--out", str(resumed), "--epochs", "1"]) == 0
    assert main(["train", str(config), "--backend", "numpy", "--out", str(resumed), "--resume"]) == 0
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    metrics = [[json.loads(s)["train_accuracy"] for s in (f / "metrics.jsonl").read_text().splitlines()]
               for f in (straight, resumed)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2
    # and the augmentation did change the run: without it the weights differ
    config.write_text(TINY_AUGMENTED.replace("augment: crop_flip\ncrop_pad: 2\n", ""))
    assert main(["train", str(config), "--backend", "numpy", "--out", str(plain)]) == 0
    assert any(not np.array_equal(a[k], v) for k, v in _checkpoint(plain).items())
