"""Hostile dataset inputs: gzip bombs, absurd declared sizes, unreadable folders, an empty --data.

Each must end as one UserInputError line naming the file or folder (and, through the CLI, exit
status 2), never a traceback, and a bomb must cost no more memory than an honest file.
"""
from __future__ import annotations

import builtins
import gzip
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.datasets import load_dataset
from nitisim.datasets.cifar import load_cifar_folder, read_cifar_pickle_batch, write_cifar_folder
from nitisim.datasets.discovery import find_dataset
from nitisim.datasets.idx import MAX_PAYLOAD_BYTES, read_idx, read_idx_labels, write_idx_folder
from nitisim.contract.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = ROOT / "configs" / "train" / "fashion-lenet.yaml"


def idx_header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def gzip_bomb(path: Path, dims: tuple[int, ...], honest: bytes, mib_of_zeros: int) -> Path:
    """An IDX file whose first gzip member is the honest file and whose further members are each
    1 MiB of zeros compressed to about 1 kB: `mib_of_zeros` MiB of trailing data."""
    zeros = gzip.compress(bytes(1 << 20), 9, mtime=0)
    path.write_bytes(gzip.compress(idx_header(dims) + honest, 9, mtime=0) + zeros * mib_of_zeros)
    return path


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    """3 MB of gzip that inflates to 3 GiB: the reader stops one byte past the declared 60000
    labels, so its peak memory stays near the honest file's (full decompression needs 3 GiB)."""
    path = gzip_bomb(tmp_path / "train-labels-idx1-ubyte.gz", (60000,), bytes(60000), 3000)
    assert path.stat().st_size < 4_000_000
    tracemalloc.start()
    try:
        with pytest.raises(UserInputError) as info:
            read_idx_labels(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == (f"{path}: size: trailing bytes: payload is more than 60000 bytes, "
                               "dims (60000,) need 60000")
    assert peak < 32 * 2**20


def test_streamed_read_equals_the_file(tmp_path):
    """The streaming reader returns exactly the payload, gzipped (several members) or raw."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    raw = idx_header(images.shape) + images.tobytes()
    (tmp_path / "raw").write_bytes(raw)
    (tmp_path / "multi.gz").write_bytes(gzip.compress(raw[:5000], mtime=0) + gzip.compress(raw[5000:], mtime=0))
    for name in ("raw", "multi.gz"):
        got = read_idx(tmp_path / name, ndim=3)
        assert got.shape == images.shape and np.array_equal(got, images) and not got.flags.writeable


def test_absurd_declared_size_in_gzip_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(idx_header((2**32 - 1, 28, 28)), mtime=0))
    with pytest.raises(UserInputError) as info:
        read_idx(path, ndim=3)
    assert str(info.value) == (f"{path}: size: dims (4294967295, 28, 28) declare {(2**32 - 1) * 784} bytes, "
                               f"over the {MAX_PAYLOAD_BYTES} an MNIST-family file can hold")


def test_truncated_gzip_payload_is_a_size_error(tmp_path):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_header((100,)) + bytes(60), mtime=0))
    with pytest.raises(UserInputError, match=r"size: truncated: payload is 60 bytes, dims \(100,\) need 100"):
        read_idx(path, ndim=1)


@pytest.fixture
def unreadable(monkeypatch):
    """Make a folder behave as if it had mode 000: the tests run as root, for whom chmod stops
    nothing, so the calls pathlib and open() make on paths inside it raise PermissionError."""
    def deny(folder: Path):
        prefix = str(folder) + os.sep
        for owner, name in ((os, "stat"), (os, "listdir"), (os, "scandir"), (builtins, "open")):
            real = getattr(owner, name)

            def refusing(path, *args, _real=real, **kwargs):
                if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(prefix):
                    raise PermissionError(13, "Permission denied", os.fspath(path))
                return _real(path, *args, **kwargs)

            monkeypatch.setattr(owner, name, refusing)
        return folder
    return deny


def test_unreadable_mnist_folder_is_one_line(tmp_path, capsys, unreadable):
    folder = tmp_path / "fashion-mnist"
    write_idx_folder(folder, np.zeros((4, 28, 28), np.uint8), np.zeros(4), np.zeros((2, 28, 28), np.uint8),
                     np.zeros(2))
    unreadable(folder)
    line = one_error_line(capsys, ["train", str(TRAIN_CONFIG), "--data", str(folder)])
    assert line == f"nitisim: error: {folder}: dataset: cannot read this folder: Permission denied"
    line = one_error_line(capsys, ["train", str(TRAIN_CONFIG), "--data", str(tmp_path)])  # its parent
    assert line == f"nitisim: error: {folder}: dataset: cannot read this folder: Permission denied"


def test_unreadable_cifar_folder_is_one_line(tmp_path, unreadable):
    batches = write_cifar_folder(tmp_path, np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5, np.int64),
                                 np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64))
    unreadable(batches)
    for call in (lambda: load_cifar_folder(batches), lambda: load_dataset("cifar10", tmp_path)):
        with pytest.raises(UserInputError) as info:
            call()
        assert str(info.value) == f"{batches}: dataset: cannot read this folder: Permission denied"


def test_unreadable_file_in_a_readable_folder_is_one_line(tmp_path, monkeypatch):
    folder = write_idx_folder(tmp_path / "fm", np.zeros((4, 28, 28), np.uint8), np.zeros(4),
                              np.zeros((2, 28, 28), np.uint8), np.zeros(2))
    blocked = folder / "train-images-idx3-ubyte.gz"
    real_open = builtins.open

    def refusing(path, *args, **kwargs):  # as root, chmod 000 on the file would not stop the read
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(blocked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    with pytest.raises(UserInputError) as info:
        load_dataset("fashion-mnist", folder)
    assert str(info.value) == f"{blocked}: file: cannot read: Permission denied"


def test_empty_data_flag_is_an_error_not_discovery(tmp_path, capsys):
    with pytest.raises(UserInputError, match=r"^--data: is empty; give the dataset folder"):
        find_dataset("fashion-mnist", "", environ={}, home=tmp_path, system_dirs={})
    line = one_error_line(capsys, ["train", str(TRAIN_CONFIG), "--data", ""])
    assert line.startswith("nitisim: error: --data: is empty; give the dataset folder, or leave --data out")


def test_data_flag_unknown_user_and_overlong_name(tmp_path):
    with pytest.raises(UserInputError, match=r"^~no-such-user-nitisim/x: --data: cannot expand ~"):
        find_dataset("mnist", "~no-such-user-nitisim/x", environ={}, home=tmp_path, system_dirs={})
    long = tmp_path / ("a" * 5000)
    with pytest.raises(UserInputError, match=r"dataset: cannot read this folder: File name too long"):
        find_dataset("mnist", long, environ={}, home=tmp_path, system_dirs={})


def test_cifar_pickle_labels_too_large_for_int64(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10**30]}, protocol=2))
    with pytest.raises(UserInputError) as info:
        read_cifar_pickle_batch(path)
    assert str(info.value) == f"{path}: labels: label {10**30} at index 1 is outside 0..9 (1 bad in all)"


class _Declared:
    """Pickles as numpy.ndarray((rows, 3072), uint8): an allowed global, so a pickle of a few dozen
    bytes can declare an array of gigabytes that no byte of the file fills."""

    def __init__(self, rows: int):
        self.rows = rows

    def __reduce__(self):
        return np.ndarray, ((self.rows, 3072), np.dtype(np.uint8))


def test_cifar_pickle_array_larger_than_its_file(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Declared(100_000), b"labels": [0] * 100_000}, protocol=2))
    with pytest.raises(UserInputError) as info:
        read_cifar_pickle_batch(path)
    size = path.stat().st_size
    assert str(info.value) == f"{path}: data: b'data' claims {100_000 * 3072} bytes, more than the file's {size}"


def test_cifar_pickle_dtype_with_forged_flags_is_refused(tmp_path):
    """numpy's dtype.__setstate__ believes the flags it is given; a uint8 dtype flagged as holding
    object references (flags 157 here, found by the fuzzer) would make numpy treat pixels as
    pointers. Only the state numpy itself writes for a plain numeric dtype is accepted."""
    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, protocol=2)
    state = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # ... elsize -1, alignment -1, flags 0)
    assert good.count(state) == 1
    path = tmp_path / "data_batch_1"
    path.write_bytes(good.replace(state, state[:-2] + b"\x9dt"))
    with pytest.raises(UserInputError) as info:
        read_cifar_pickle_batch(path)
    assert str(info.value) == (f"{path}: pickle: not a CIFAR-10 python batch (UnpicklingError: dtype state "
                               "(3, '|', None, None, None, -1, -1, 157) is not numpy's own for uint8)")
    path.write_bytes(good)
    images, labels = read_cifar_pickle_batch(path)
    assert images.shape == (1, 32, 32, 3) and labels.tolist() == [1]


def test_cifar_pickle_object_dtype_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.array([[None]], dtype=object), b"labels": [1]}, protocol=2))
    with pytest.raises(UserInputError, match=r"dtype 'O8' is not a plain numeric dtype"):
        read_cifar_pickle_batch(path)
