"""Datasets: `load_dataset(name)` for Fashion-MNIST, MNIST and CIFAR-10, and `synthetic_dataset`.

Every dataset comes back as a frozen `Dataset` of read-only uint8 NHWC images and int64 labels,
whatever its file format; `discovery` finds the folder, `idx` and `cifar` read the files strictly,
`transforms` turns pixels into int8 inputs and holds the augmentation and shuffle order.
Each Dataset carries its `fingerprint` (see `fingerprint`), which a training checkpoint records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..contract.errors import UserInputError
from .cifar import load_cifar_folder
from .discovery import DATASET_NAMES, IDX_ROLES, check_name, find_dataset, find_idx_file, idx_names
from .fingerprint import array_fingerprint
from .idx import NUM_CLASSES, read_idx_images, read_idx_labels

MNIST_SIDE = 28  # both MNIST and Fashion-MNIST; models are built for it, so another size is an error


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split (and an optional validation split) held in memory. Arrays are read-only;
    transforms return new arrays."""

    name: str  # one of DATASET_NAMES, or "synthetic"
    train_images: np.ndarray = field(repr=False)  # (N, H, W, C) uint8
    train_labels: np.ndarray = field(repr=False)  # (N,) int64 in 0..num_classes-1
    test_images: np.ndarray = field(repr=False)  # (M, H, W, C) uint8
    test_labels: np.ndarray = field(repr=False)  # (M,) int64
    num_classes: int
    source: str  # the folder the files came from (or a description for synthetic data)
    # hash of the arrays (fingerprint.array_fingerprint), computed on construction when not given;
    # dataclasses.replace passes it on, so a subset keeps the fingerprint of the data set it was cut from
    fingerprint: str = ""
    # images held out of the training set to choose settings on (train.data.split_validation);
    # None when the run holds none out. Not part of the fingerprint: they are cut from the train arrays
    validation_images: np.ndarray | None = field(default=None, repr=False)  # (V, H, W, C) uint8
    validation_labels: np.ndarray | None = field(default=None, repr=False)  # (V,) int64

    def __post_init__(self) -> None:
        if not self.fingerprint:
            arrays = (self.train_images, self.train_labels, self.test_images, self.test_labels)
            object.__setattr__(self, "fingerprint", array_fingerprint(arrays, self.num_classes))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _load_idx_folder(name: str, folder: Path) -> Dataset:
    paths = {}
    for role in IDX_ROLES:
        path = find_idx_file(folder, role)
        if path is None:
            raise UserInputError(str(folder), role, f"missing file (looked for {', '.join(idx_names(role))})")
        paths[role] = path
    parts = {}
    for split in ("train", "test"):
        images = read_idx_images(paths[f"{split}-images"])  # (N, H, W)
        labels = read_idx_labels(paths[f"{split}-labels"], NUM_CLASSES)  # (N,)
        if images.shape[0] != labels.shape[0]:
            raise UserInputError(
                str(paths[f"{split}-labels"]), "size",
                f"{labels.shape[0]} labels but {images.shape[0]} images in {paths[f'{split}-images'].name}",
            )
        if images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
            raise UserInputError(
                str(paths[f"{split}-images"]), "dims",
                f"images are {images.shape[1]}x{images.shape[2]}, {name} images are {MNIST_SIDE}x{MNIST_SIDE}",
            )
        parts[split] = (images[..., None], _frozen(labels.astype(np.int64)))  # (N, 28, 28, 1), (N,)
    return Dataset(name, *parts["train"], *parts["test"], num_classes=NUM_CLASSES, source=str(folder))


def load_dataset(name: str, data_path: str | Path | None = None) -> Dataset:
    """Find (see discovery.find_dataset) and read dataset `name`; every file problem is a UserInputError."""
    check_name(name)
    folder = find_dataset(name, data_path)
    if name == "cifar10":
        train_x, train_y, test_x, test_y = load_cifar_folder(folder)
        return Dataset(
            name, _frozen(train_x), _frozen(train_y), _frozen(test_x), _frozen(test_y),
            num_classes=NUM_CLASSES, source=str(folder),
        )
    return _load_idx_folder(name, folder)


def synthetic_dataset(
    n_train: int, n_test: int, shape: tuple[int, int, int], num_classes: int, seed: int
) -> Dataset:
    """A small learnable uint8 dataset: one blocky random pattern per class plus pixel noise.

    Each class has a template of coarse blocks (a quarter of the image side, so convolutions and
    pooling keep the signal); an image is its class's template at half contrast around 128 plus
    uniform noise in -48..48. Deterministic in all its arguments.

    >>> d = synthetic_dataset(40, 10, (8, 8, 3), 4, seed=0)
    >>> d.train_images.shape, d.train_images.dtype.name, d.test_labels.shape, int(d.train_labels.max()) < 4
    ((40, 8, 8, 3), 'uint8', (10,), True)
    """
    h, w, c = shape
    if min(n_train, n_test) < 1 or min(h, w, c) < 1 or not 1 <= num_classes <= 256:
        raise ValueError(f"bad synthetic dataset size: n=({n_train}, {n_test}) shape={shape} classes={num_classes}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, 0x53594E54))))  # "SYNT"
    block = max(1, min(h, w) // 4)
    coarse = rng.integers(0, 256, size=(num_classes, -(-h // block), -(-w // block), c))  # (K, h', w', C)
    templates = coarse.repeat(block, axis=1).repeat(block, axis=2)[:, :h, :w, :]  # (K, H, W, C)
    n = n_train + n_test
    labels = rng.integers(0, num_classes, size=n)  # (n,)
    noise = rng.integers(-48, 49, size=(n, h, w, c))  # (n, H, W, C)
    images = np.clip(128 + (templates[labels] - 128) // 2 + noise, 0, 255).astype(np.uint8)  # (n, H, W, C)
    return Dataset(
        "synthetic",
        _frozen(images[:n_train]), _frozen(labels[:n_train].astype(np.int64)),
        _frozen(images[n_train:]), _frozen(labels[n_train:].astype(np.int64)),
        num_classes=num_classes,
        source=f"synthetic(shape={tuple(shape)}, classes={num_classes}, seed={seed})",
    )


__all__ = ("DATASET_NAMES", "Dataset", "find_dataset", "load_dataset", "synthetic_dataset")
