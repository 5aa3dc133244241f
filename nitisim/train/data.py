"""The data side of a run: load and check the dataset, take subsets, and cut each step's batch.

A step's batch is a pure function of (seed, epoch, step): the epoch's order is
`batch_order(n, epoch, seed)`, batch i of the epoch is slice i of it, and crop/flip augmentation
and cutout (erase_size) draw from (seed, step). Training drops the last partial batch (its images
differ every epoch, since the order does), so every training step runs the one graph built for
`batch`.

With `validation: V` the last V training images are held out (split_validation) before
train_subset takes its first N of the rest: the batch order, augmentation and training steps
only ever index the remaining images, and the held-out ones are evaluated like the test set.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from ..datasets import Dataset, load_dataset, synthetic_dataset
from ..datasets.transforms import batch_order, random_crop_flip, random_erase
from ..contract.errors import UserInputError
from .config import CROPPING_AUGMENTS, TrainConfig

# Per-channel mean and std (0..1 units) for the float-normalised input path of fp32 comparisons.
FLOAT_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def float_stats(dataset: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # synthetic images are centred on pixel 128 with a spread of about a quarter of the range
    return FLOAT_STATS.get(dataset, ((0.5,) * channels, (0.25,) * channels))


def load_for_config(cfg: TrainConfig, data_path: str | Path | None) -> Dataset:
    """The config's dataset (subsets applied), checked against the model's input and classes."""
    if cfg.dataset == "synthetic":
        if data_path is not None:
            raise UserInputError("--data", None, "dataset synthetic is generated, it reads no folder")
        ds = synthetic_dataset(cfg.synthetic.train, cfg.synthetic.test, cfg.model.input_shape, cfg.model.classes,
                               seed=cfg.seed)
    else:
        ds = load_dataset(cfg.dataset, data_path)
    if tuple(ds.image_shape) != tuple(cfg.model.input_shape):
        raise UserInputError(cfg.source, "model", f"{cfg.model.name} takes {_shape(cfg.model.input_shape)} inputs "
                             f"but {cfg.dataset} images are {_shape(ds.image_shape)}")
    if ds.num_classes != cfg.model.classes:
        raise UserInputError(cfg.source, "model", f"{cfg.model.name} has {cfg.model.classes} classes, "
                             f"{cfg.dataset} has {ds.num_classes}")
    ds = split_validation(ds, cfg)
    changes = {}
    for key, n, images, labels in (("train_subset", cfg.train_subset, "train_images", "train_labels"),
                                   ("test_subset", cfg.test_subset, "test_images", "test_labels")):
        if n is None:
            continue
        available = getattr(ds, labels).shape[0]
        if n > available:
            held = (f" once {cfg.validation} are held out for validation"
                    if key == "train_subset" and cfg.validation else "")
            raise UserInputError(cfg.source, key, f"{n} images asked for, {cfg.dataset} has {available}{held}")
        changes[images] = getattr(ds, images)[:n]  # the first n: a fixed, reproducible subset
        changes[labels] = getattr(ds, labels)[:n]
    ds = dataclasses.replace(ds, **changes) if changes else ds
    if ds.train_labels.shape[0] < cfg.batch:
        raise UserInputError(cfg.source, "batch", f"{cfg.batch} is more than the {ds.train_labels.shape[0]} "
                             "training images")
    return ds


def split_validation(ds: Dataset, cfg: TrainConfig) -> Dataset:
    """`ds` with its last cfg.validation training images moved to the validation split (unchanged for 0).

    The last V, not a random draw: the held-out set is then the same for every seed and both
    arithmetics without a generator to agree on, and it is what Keras' validation_split holds
    out. The IDX training files are not ordered by class (Fashion-MNIST's last 5,000 hold 450 to
    527 images of each of its 10 classes), so the tail is a fair sample.
    """
    v = cfg.validation
    if not v:
        return ds
    total = ds.train_labels.shape[0]
    if total - v < cfg.batch:
        raise UserInputError(cfg.source, "validation", f"holding out {v} of the {total} {cfg.dataset} training "
                             f"images leaves {max(total - v, 0)}, no batch of {cfg.batch}")
    keep = total - v
    return dataclasses.replace(ds, train_images=ds.train_images[:keep], train_labels=ds.train_labels[:keep],
                               validation_images=ds.train_images[keep:], validation_labels=ds.train_labels[keep:])


def _shape(hwc) -> str:
    return "x".join(str(d) for d in hwc)


def steps_per_epoch(ds: Dataset, batch: int) -> int:
    return ds.train_labels.shape[0] // batch


def epoch_batches(ds: Dataset, cfg: TrainConfig, epoch: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(global step, images (B, H, W, C) uint8, labels (B,) int64) for every step of `epoch`."""
    steps = steps_per_epoch(ds, cfg.batch)
    order = batch_order(ds.train_labels.shape[0], epoch, cfg.seed)  # (N,)
    for i in range(steps):
        step = epoch * steps + i
        idx = order[i * cfg.batch:(i + 1) * cfg.batch]  # (B,)
        images = ds.train_images[idx]
        if cfg.augment != "none":
            pad = cfg.crop_pad if cfg.augment in CROPPING_AUGMENTS else 0
            images = random_crop_flip(images, pad, rng_seed=cfg.seed, step=step, flip=cfg.augment != "crop")
        if cfg.erase_size:
            # after the crop and flip, as in cutout: the hole lands on the pixels the net actually sees,
            # and here, before the graph, so the int8 backends and the fp32 twin see the same batch
            images = random_erase(images, cfg.erase_size, rng_seed=cfg.seed, step=step)
        yield step, images, ds.train_labels[idx]


def eval_batches(images: np.ndarray, labels: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive slices of `batch`; the last one is the remainder (smaller), never padded."""
    for start in range(0, labels.shape[0], batch):
        yield images[start:start + batch], labels[start:start + batch]
