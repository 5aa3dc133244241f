"""Input conversion and augmentation on integer arrays, plus the deterministic epoch order.

The integer-only input path (spec §6): uint8 pixels p become int8 `clamp(p - 128, -127, 127)`
with exponent -8, so the real value is (p - 128) / 256 and pixel 0 maps to -127 (-128 is never
used). An optional per-channel integer mean and power-of-two shift refines it; a float-normalised
path exists only to compare against float baselines.

Augmentation (CIFAR-style pad-crop and horizontal flip, and cutout: one square per image set to
pixel 0) and the shuffle order are pure functions of (seed, step) and (seed, epoch): a run resumed
from a checkpoint at step k draws exactly the batches, crops and squares the uninterrupted run
drew, and every backend trains on the same pixels, since augmentation happens here, before the
graph. The crops, flips and squares draw from the project's counter hash (numerics.hash_bits of
(seed, step, purpose tag, index)), integer arithmetic defined in this repository that a C or CUDA
input pipeline can mirror bit for bit; the shuffle order uses a numpy
Generator(PCG64) seeded from a SeedSequence of (seed, epoch, purpose tag). No generator state is
kept anywhere.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..contract.numerics import clamp_int8, hash_bits, round_shift

INPUT_EXP = -8  # exponent of to_int8's output: m * 2**-8 == (p - 128) / 256

# Purpose tags mixed into the seed so the crop draws and the shuffle never share a stream (the crop
# tag is the counter hash's tensor-id coordinate; graph tensor ids are small, so no graph draw shares it).
_TAG_CROP = 0x43524F50  # "CROP"
_TAG_ORDER = 0x4F524452  # "ORDR"
_TAG_ERASE = 0x45524153  # "ERAS": cutout's own stream, so adding it leaves the crop draws as they were


def _generator(seed: int, counter: int, tag: int) -> np.random.Generator:
    """A fresh PCG64 generator for (seed, counter, tag); same inputs, same stream, on any run."""
    if seed < 0 or counter < 0:
        raise ValueError(f"seed and step/epoch must be non-negative, got seed={seed}, counter={counter}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((int(seed), int(counter), tag))))


def _check_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels


def to_int8(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 pixels -> (int8 clamp(p - 128, -127, 127), exponent -8), same shape (spec §6).

    >>> m, e = to_int8(np.array([0, 1, 128, 255], dtype=np.uint8))
    >>> m.tolist(), m.dtype.name, e
    ([-127, -127, 0, 127], 'int8', -8)
    """
    pixels = _check_uint8(pixels)
    return clamp_int8(pixels.astype(np.int16) - 128), INPUT_EXP


def to_int8_normalized(pixels: np.ndarray, mean_u8: Sequence[int], shift: int) -> tuple[np.ndarray, int]:
    """Per-channel integer mean subtraction and a power-of-two scale: int8 with exponent -8 - shift.

    m = clamp(round((p - mean_u8[c]) * 2**shift), -127, 127), e = -8 - shift, on (..., C) pixels.
    The real value m * 2**e stays (p - mean) / 256, the same scale as to_int8; `shift` only trades
    resolution against saturation. shift > 0 magnifies low-contrast data (values beyond +-127
    saturate), shift < 0 keeps the full 9-bit centred range by halving with round-half-away-from-
    zero (numerics.round_shift 'nearest'), shift = 0 is to_int8 with a chosen centre instead of 128.
    `mean_u8` is the per-channel mean in pixel units 0..255 (e.g. (125, 123, 114) for CIFAR-10).

    >>> m, e = to_int8_normalized(np.array([[0, 100], [255, 120]], dtype=np.uint8), (110, 120), 1)
    >>> m.tolist(), e
    ([[-127, -40], [127, 0]], -9)
    """
    pixels = _check_uint8(pixels)
    mean = np.asarray(mean_u8, dtype=np.int64)
    if pixels.ndim == 0 or mean.shape != (pixels.shape[-1],):
        raise ValueError(f"need one mean per channel: {mean.shape} means for pixels of shape {pixels.shape}")
    if mean.min() < 0 or mean.max() > 255:
        raise ValueError(f"means are pixel values 0..255, got {tuple(mean.tolist())}")
    if not -8 <= shift <= 7:
        raise ValueError(f"shift must be in -8..7, got {shift}")
    centred = pixels.astype(np.int64) - mean  # (..., C), values in -255..255
    scaled = centred << shift if shift >= 0 else round_shift(centred, -shift, "nearest")
    return clamp_int8(scaled), INPUT_EXP - shift


def float_normalized(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 (p / 255 - mean[c]) / std[c] on (..., C) pixels: the float comparison path only.

    `mean` and `std` are in 0..1 units, the torchvision convention.

    >>> float_normalized(np.array([[0, 255]], dtype=np.uint8), (0.5, 0.5), (0.5, 0.25)).tolist()
    [[-1.0, 2.0]]
    """
    pixels = _check_uint8(pixels)
    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)
    if mean_a.shape != (pixels.shape[-1],) or std_a.shape != mean_a.shape or (std_a <= 0).any():
        raise ValueError(f"need one mean and one positive std per channel for pixels of shape {pixels.shape}")
    return ((pixels.astype(np.float32) / np.float32(255) - mean_a) / std_a).astype(np.float32)


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirror (N, H, W, C) images left-right (a copy).

    >>> hflip(np.arange(3).reshape(1, 1, 3, 1))[0, 0, :, 0].tolist()
    [2, 1, 0]
    """
    return np.ascontiguousarray(images[:, :, ::-1, :])


def crop_flip_draws(n: int, pad: int, *, rng_seed: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-image draws of random_crop_flip: (flip (N,) bool, dy (N,) int64, dx (N,) int64).

    One counter-hash word per draw, hash_bits(rng_seed, step, CROP tag, index): image i's flip is
    the top bit of word i, its window top dy the high half of word (N + i) * (2 * pad + 1), its
    window left dx the same of word 2N + i. The multiply-high maps a uniform 32-bit word onto
    0..2*pad without division (off uniform by under (2*pad + 1) / 2**32). The flip words come first
    and do not involve `pad`, so the flip mask of a (rng_seed, step, N) does not depend on `pad`.

    >>> f, dy, dx = crop_flip_draws(1000, 2, rng_seed=0, step=0)
    >>> sorted(set(dy.tolist())), sorted(set(dx.tolist())), 400 < int(f.sum()) < 600
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], True)
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if rng_seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got seed={rng_seed}, step={step}")
    words = hash_bits(rng_seed, step, _TAG_CROP, 3 * n).reshape(3, n)  # uint32
    flips = (words[0] >> np.uint32(31)).astype(bool)  # (N,)
    span = np.uint64(2 * pad + 1)
    dy = ((words[1].astype(np.uint64) * span) >> np.uint64(32)).astype(np.int64)  # (N,) in 0..2*pad
    dx = ((words[2].astype(np.uint64) * span) >> np.uint64(32)).astype(np.int64)  # (N,)
    return flips, dy, dx


def random_crop_flip(
    images: np.ndarray, pad: int = 4, *, rng_seed: int, step: int, flip: bool = True
) -> np.ndarray:
    """Zero-pad by `pad`, take a random HxW window, mirror about half the images: same shape and dtype.

    Image i becomes the window of its zero-padded image whose top-left corner is (dy[i], dx[i]) in
    padded coordinates (crop_flip_draws), mirrored left-right after the crop when flip[i]: output
    pixel (r, c) is padded pixel (r + dy, c + dx), or (r + dy, W - 1 - c + dx) when flipped, so
    content moves by (pad - dy, pad - dx). `flip=False` crops only; `pad=0` flips only.
    Apply it to uint8 pixels before to_int8 so the padding is black (pixel 0), as in the
    torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip recipe NITI trained with; on int8
    inputs the zero padding would be mid-grey instead. Pure integer indexing: one gather for the
    whole batch, the per-image window and mirror becoming row and column index arrays.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype.kind not in "iu":
        raise TypeError(f"expected integer (N, H, W, C) images, got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    flips, dy, dx = crop_flip_draws(n, pad, rng_seed=rng_seed, step=step)
    flips &= flip
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (N, H+2p, W+2p, C), zeros
    rows = dy[:, None] + np.arange(h)  # (N, H)
    cols = dx[:, None] + np.where(flips[:, None], np.arange(w)[::-1], np.arange(w))  # (N, W)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)


def erase_draws(n: int, height: int, width: int, *, rng_seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-image square centres of random_erase: (cy (N,) int64 in 0..H-1, cx (N,) int64 in 0..W-1).

    One counter-hash word per draw, hash_bits(rng_seed, step, ERAS tag, index): image i's centre
    row is the high half of word i * H, its centre column the same of word N + i times W (the
    multiply-high of crop_flip_draws: no division, off uniform by under H / 2**32). The centre
    ranges over the whole image, not only where the square fits, so squares are clipped at the
    borders and edge pixels are erased about as often as central ones (DeVries & Taylor's cutout).

    >>> cy, cx = erase_draws(1000, 28, 28, rng_seed=0, step=0)
    >>> int(cy.min()), int(cy.max()), int(cx.min()), int(cx.max())
    (0, 27, 0, 27)
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if rng_seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got seed={rng_seed}, step={step}")
    words = hash_bits(rng_seed, step, _TAG_ERASE, 2 * n).reshape(2, n).astype(np.uint64)  # (2, N)
    cy = ((words[0] * np.uint64(height)) >> np.uint64(32)).astype(np.int64)  # (N,)
    cx = ((words[1] * np.uint64(width)) >> np.uint64(32)).astype(np.int64)  # (N,)
    return cy, cx


def erase_box(cy: np.ndarray, cx: np.ndarray, size: int, height: int, width: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The clipped squares of random_erase: (top, bottom, left, right) (N,) int64, half-open.

    Unclipped, the square covers rows cy - size // 2 .. cy - size // 2 + size - 1 (exactly `size`
    rows, odd or even; for an even size the centre is the lower of the two middle rows), and the
    same for columns; then it is cut to the image.

    >>> [v.tolist() for v in erase_box(np.array([0, 10]), np.array([27, 5]), 8, 28, 28)]
    [[0, 6], [4, 14], [23, 1], [28, 9]]
    """
    top = np.clip(cy - size // 2, 0, height)
    bottom = np.clip(cy - size // 2 + size, 0, height)
    left = np.clip(cx - size // 2, 0, width)
    right = np.clip(cx - size // 2 + size, 0, width)
    return top, bottom, left, right


def random_erase(images: np.ndarray, size: int, *, rng_seed: int, step: int) -> np.ndarray:
    """Cutout: set one size x size square of each (N, H, W, C) image to 0, clipped at the borders (a copy).

    Centres come from erase_draws, squares from erase_box; every channel of the square becomes 0,
    the value random_crop_flip pads with, so on uint8 pixels the hole is black like the padding
    (apply it to the uint8 batch, after the crop and flip, as DeVries & Taylor cut out after their
    crop and flip). `size` 0 returns the images unchanged (still a copy). Pure integer indexing: one
    boolean mask for the whole batch from row and column comparisons.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype.kind not in "iu":
        raise TypeError(f"expected integer (N, H, W, C) images, got {images.dtype} {images.shape}")
    if size < 0:
        raise ValueError(f"erase size must be >= 0, got {size}")
    out = images.copy()
    if size == 0:
        return out
    n, h, w, _ = images.shape
    top, bottom, left, right = erase_box(*erase_draws(n, h, w, rng_seed=rng_seed, step=step), size, h, w)
    rows, cols = np.arange(h), np.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (N, W)
    out[in_rows[:, :, None] & in_cols[:, None, :]] = 0  # (N, H, W) mask: every channel of the pixel
    return out


def batch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    """A permutation of range(n) (int64), a pure function of (seed, epoch): the epoch's shuffle.

    >>> sorted(batch_order(5, 0, 1).tolist()), bool((batch_order(5, 3, 1) == batch_order(5, 3, 1)).all())
    ([0, 1, 2, 3, 4], True)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _generator(seed, epoch, _TAG_ORDER).permutation(n).astype(np.int64)  # (n,)

