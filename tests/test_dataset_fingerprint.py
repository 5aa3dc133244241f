"""A data set's fingerprint: equal for the same arrays however they were stored, different for any other data."""
import dataclasses
from pathlib import Path

import numpy as np

from nitisim.datasets import load_dataset, synthetic_dataset
from nitisim.datasets.idx import write_idx_folder
from nitisim.train.config import load_config
from nitisim.train.data import load_for_config

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"


def _folder(path: Path, ds, gz: bool = True) -> Path:
    return write_idx_folder(path, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, gz=gz)


def test_same_data_same_fingerprint_whatever_the_files(tmp_path):
    ds = synthetic_dataset(64, 16, (28, 28, 1), 10, seed=3)
    gz = load_dataset("mnist", _folder(tmp_path / "gz", ds))
    raw = load_dataset("mnist", _folder(tmp_path / "moved" / "raw", ds, gz=False))
    assert gz.source != raw.source and gz.fingerprint == raw.fingerprint
    assert gz.fingerprint.startswith("sha256:") and len(gz.fingerprint) == len("sha256:") + 16


def test_any_other_data_changes_it(tmp_path):
    ds = synthetic_dataset(64, 16, (28, 28, 1), 10, seed=3)
    base = load_dataset("mnist", _folder(tmp_path / "a", ds)).fingerprint
    pixel = ds.train_images.copy()
    pixel[5, 3, 3, 0] ^= 1  # one bit of one pixel
    label = ds.test_labels.copy()
    label[0] = (label[0] + 1) % 10
    for i, changed in enumerate((dataclasses.replace(ds, train_images=pixel, fingerprint=""),
                                 dataclasses.replace(ds, test_labels=label, fingerprint=""),
                                 synthetic_dataset(64, 16, (28, 28, 1), 10, seed=4))):
        other = load_dataset("mnist", _folder(tmp_path / f"b{i}", changed)).fingerprint
        assert other != base, i


def test_train_and_test_roles_are_told_apart():
    ds = synthetic_dataset(16, 16, (8, 8, 1), 4, seed=0)
    swapped = dataclasses.replace(ds, train_images=ds.test_images, test_images=ds.train_images,
                                  train_labels=ds.test_labels, test_labels=ds.train_labels, fingerprint="")
    assert swapped.fingerprint != ds.fingerprint


def test_synthetic_fingerprint_follows_its_parameters():
    a = synthetic_dataset(32, 8, (8, 8, 1), 4, seed=0)
    assert a.fingerprint == synthetic_dataset(32, 8, (8, 8, 1), 4, seed=0).fingerprint
    assert len({a.fingerprint, synthetic_dataset(32, 8, (8, 8, 1), 4, seed=1).fingerprint,
                synthetic_dataset(32, 9, (8, 8, 1), 4, seed=0).fingerprint,
                synthetic_dataset(32, 8, (8, 8, 1), 5, seed=0).fingerprint}) == 4


def test_a_subset_keeps_the_fingerprint_of_its_data_set(tmp_path):
    cfg = load_config(SYNTHETIC)
    whole = load_for_config(cfg, None)
    part = load_for_config(dataclasses.replace(cfg, train_subset=100, test_subset=50), None)
    assert part.train_labels.shape == (100,) and part.fingerprint == whole.fingerprint
    assert np.array_equal(part.train_images, whole.train_images[:100])
