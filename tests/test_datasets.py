"""Dataset package: IDX and CIFAR readers (round trips and every corruption), the restricted
unpickler, folder discovery order, the integer input transforms, augmentation, shuffle order and
the synthetic dataset. Needs nothing but numpy; all files are made small in tmp_path."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from nitisim.datasets import Dataset, load_dataset, synthetic_dataset
from nitisim.datasets import discovery
from nitisim.datasets.cifar import (
    load_cifar_folder,
    read_cifar_bin_batch,
    read_cifar_pickle_batch,
    write_cifar_bin_batch,
    write_cifar_folder,
    write_cifar_pickle_batch,
)
from nitisim.datasets.discovery import find_dataset
from nitisim.datasets.idx import read_idx, read_idx_images, read_idx_labels, write_idx, write_idx_folder
from nitisim.datasets.transforms import (
    INPUT_EXP,
    batch_order,
    float_normalized,
    hflip,
    random_crop_flip,
    to_int8,
    to_int8_normalized,
)
from nitisim.contract.errors import UserInputError

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _images(n: int, shape=(28, 28), seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, seed: int = 1) -> np.ndarray:
    return _rng(seed).integers(0, 10, size=n).astype(np.uint8)


def _expect_error(path, field: str, call):
    """Run `call`, require a UserInputError naming `path` and `field`, return it."""
    with pytest.raises(UserInputError) as info:
        call()
    err = info.value
    assert str(path) in str(err)
    assert err.field == field, str(err)
    assert "\n" not in str(err)  # the CLI prints it on one line
    return err


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images, labels = _images(7), _labels(7)
    write_idx(tmp_path / "img", images, compress=compress)
    write_idx(tmp_path / "lab", labels, compress=compress)
    got = read_idx_images(tmp_path / "img")
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "lab"), labels)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    labels = _labels(5)
    write_idx(tmp_path / "gz_without_suffix", labels, compress=True)
    write_idx(tmp_path / "raw_named.gz", labels, compress=False)
    assert (tmp_path / "gz_without_suffix").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "gz_without_suffix"), labels)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "raw_named.gz"), labels)


def test_idx_magic_numbers(tmp_path):
    write_idx(tmp_path / "lab", _labels(3))
    write_idx(tmp_path / "img", _images(3))
    assert (tmp_path / "lab").read_bytes()[:4] == bytes.fromhex("00000801")
    assert (tmp_path / "img").read_bytes()[:4] == bytes.fromhex("00000803")


def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()


@pytest.mark.parametrize(
    "name, content, field",
    [
        ("bad_magic", b"\x00\x00\x09\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03", "magic"),
        ("not_idx", b"PK\x03\x04 this is a zip", "magic"),
        ("too_short", b"\x00\x00", "magic"),
        ("empty", b"", "magic"),
        ("zero_dims", b"\x00\x00\x08\x00", "dims"),
        ("header_cut", b"\x00\x00\x08\x01\x00\x00", "size"),
        ("truncated", _idx_bytes(np.zeros(10, np.uint8))[:-1], "size"),
        ("trailing", _idx_bytes(np.zeros(10, np.uint8)) + b"\x00", "size"),
        ("label_out_of_range", _idx_bytes(np.array([0, 9, 10, 3], np.uint8)), "labels"),
        ("images_not_labels", _idx_bytes(np.zeros((2, 3, 3), np.uint8)), "dims"),
    ],
)
def test_idx_label_file_corruptions(tmp_path, name, content, field):
    path = tmp_path / name
    path.write_bytes(content)
    _expect_error(path, field, lambda: read_idx_labels(path))
    gz = tmp_path / f"{name}.gz"  # the same damage inside a valid gzip stream is found the same way
    gz.write_bytes(gzip.compress(content))
    _expect_error(gz, field, lambda: read_idx_labels(gz))


def test_idx_image_file_with_label_magic_is_rejected(tmp_path):
    path = tmp_path / "labels_as_images"
    write_idx(path, _labels(4))
    _expect_error(path, "dims", lambda: read_idx_images(path))


def test_idx_huge_declared_dims_is_a_size_error(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3 + b"\x00" * 16)
    err = _expect_error(path, "size", lambda: read_idx(path))
    assert "truncated" in str(err)


def test_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(_idx_bytes(_images(4)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    _expect_error(cut, "gzip", lambda: read_idx(cut))
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(good + b"not gzip at all")
    _expect_error(garbage, "gzip", lambda: read_idx(garbage))
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # inside the CRC32 trailer
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(bytes(flipped))
    _expect_error(bad_crc, "gzip", lambda: read_idx(bad_crc))


def test_idx_missing_file(tmp_path):
    _expect_error(tmp_path / "nope", "file", lambda: read_idx(tmp_path / "nope"))
    _expect_error(tmp_path, "file", lambda: read_idx(tmp_path))  # a directory


def _fake_mnist(folder: Path, n_train=12, n_test=5, **kw) -> tuple[np.ndarray, ...]:
    tr_x, tr_y, te_x, te_y = _images(n_train, seed=2), _labels(n_train, 3), _images(n_test, seed=4), _labels(n_test, 5)
    write_idx_folder(folder, tr_x, tr_y, te_x, te_y, **kw)
    return tr_x, tr_y, te_x, te_y


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (True, True), (False, True)])
def test_load_fake_mnist_folder(tmp_path, gz, dotted):
    tr_x, tr_y, te_x, te_y = _fake_mnist(tmp_path / "mnist", gz=gz, dotted=dotted)
    d = load_dataset("mnist", tmp_path / "mnist")
    assert isinstance(d, Dataset) and d.name == "mnist" and d.num_classes == 10
    assert d.source == str(tmp_path / "mnist")
    assert d.train_images.shape == (12, 28, 28, 1) and d.test_images.shape == (5, 28, 28, 1)
    assert d.train_images.dtype == np.uint8 and d.image_shape == (28, 28, 1)
    assert d.train_labels.dtype == np.int64
    np.testing.assert_array_equal(d.train_images[..., 0], tr_x)
    np.testing.assert_array_equal(d.train_labels, tr_y)
    np.testing.assert_array_equal(d.test_images[..., 0], te_x)
    np.testing.assert_array_equal(d.test_labels, te_y)
    for a in (d.train_images, d.train_labels, d.test_images, d.test_labels):
        assert not a.flags.writeable


def test_mnist_folder_count_mismatch_and_missing_file(tmp_path):
    folder = tmp_path / "fm"
    _fake_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", _labels(4))  # 4 labels for 5 images
    err = _expect_error(folder / "t10k-labels-idx1-ubyte.gz", "size", lambda: load_dataset("fashion-mnist", folder))
    assert "4 labels but 5 images" in str(err)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    err = _expect_error(folder, "test-labels", lambda: load_dataset("fashion-mnist", folder))
    assert "t10k-labels-idx1-ubyte.gz" in str(err)


def test_mnist_folder_wrong_image_side(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_folder(folder, _images(3, (32, 32)), _labels(3), _images(2, (32, 32)), _labels(2))
    _expect_error(folder / "train-images-idx3-ubyte.gz", "dims", lambda: load_dataset("mnist", folder))


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------
def _cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = _rng(seed)
    return r.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), r.integers(0, 10, size=n)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_batch_round_trip(tmp_path, protocol):
    x, y = _cifar(20)
    write_cifar_pickle_batch(tmp_path / "data_batch_1", x, y, protocol=protocol)
    gx, gy = read_cifar_pickle_batch(tmp_path / "data_batch_1")
    assert gx.dtype == np.uint8 and gx.shape == (20, 32, 32, 3) and gy.dtype == np.int64
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_cifar_pickle_written_by_numpy_1_names(tmp_path):
    """numpy 1 (and the python-2 originals) name numpy.core.multiarray; accepted like numpy._core."""
    x, y = _cifar(3)
    path = write_cifar_pickle_batch(tmp_path / "test_batch", x, y, protocol=2)
    raw = path.read_bytes()
    if b"numpy._core.multiarray" in raw:  # protocol 2 GLOBAL is text, so renaming is safe
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    gx, _ = read_cifar_pickle_batch(path)
    np.testing.assert_array_equal(gx, x)


def test_cifar_plane_order(tmp_path):
    """Disk order is all red, all green, all blue, each 32x32 row-major: check one pixel by hand."""
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 2, 5] = (10, 20, 30)
    path = write_cifar_bin_batch(tmp_path / "b.bin", x, np.array([7]))
    raw = path.read_bytes()
    assert raw[0] == 7
    assert (raw[1 + 2 * 32 + 5], raw[1 + 1024 + 2 * 32 + 5], raw[1 + 2048 + 2 * 32 + 5]) == (10, 20, 30)


def test_cifar_bin_batch_round_trip(tmp_path):
    x, y = _cifar(20)
    path = write_cifar_bin_batch(tmp_path / "data_batch_2.bin", x, y)
    assert path.stat().st_size == 20 * 3073
    gx, gy = read_cifar_bin_batch(path)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


@pytest.mark.parametrize("fmt", ["py", "bin"])
def test_load_cifar_folder_any_batch_size(tmp_path, fmt):
    tr_x, tr_y = _cifar(100, seed=1)  # 20 per training batch
    te_x, te_y = _cifar(7, seed=2)
    write_cifar_folder(tmp_path / "cifar10", tr_x, tr_y, te_x, te_y, fmt=fmt)
    d = load_dataset("cifar10", tmp_path)  # a parent folder: found via cifar10/cifar-10-batches-*
    assert d.source == str(tmp_path / "cifar10" / f"cifar-10-batches-{fmt}")
    assert d.train_images.shape == (100, 32, 32, 3) and d.test_images.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(d.train_images, tr_x)
    np.testing.assert_array_equal(d.train_labels, tr_y)
    np.testing.assert_array_equal(d.test_images, te_x)
    np.testing.assert_array_equal(d.test_labels, te_y)
    assert not d.train_images.flags.writeable


@pytest.mark.parametrize("fmt", ["py", "bin"])
def test_cifar_missing_batch_named(tmp_path, fmt):
    x, y = _cifar(10)
    out = write_cifar_folder(tmp_path, x, y, x[:2], y[:2], fmt=fmt)
    (out / ("data_batch_3" + (".bin" if fmt == "bin" else ""))).unlink()
    _expect_error(out, "data_batch_3", lambda: load_cifar_folder(out))


@pytest.mark.parametrize(
    "content, field",
    [
        (b"", "size"),
        (b"\x00" * 3072, "size"),
        (b"\x00" * (3073 * 2 + 1), "size"),
        (bytes([10]) + b"\x00" * 3072, "labels"),
    ],
)
def test_cifar_bin_corruptions(tmp_path, content, field):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(content)
    _expect_error(path, field, lambda: read_cifar_bin_batch(path))


def _pickle_file(path: Path, obj, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize(
    "obj, field",
    [
        ([1, 2, 3], "pickle"),
        ({b"labels": [1]}, "data"),
        ({b"data": np.zeros((2, 3072), np.int64), b"labels": [1, 2]}, "data"),
        ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [1, 2]}, "data"),
        ({b"data": "text", b"labels": [1, 2]}, "data"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, -1]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "labels"),
        ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "size"),
    ],
)
def test_cifar_pickle_structure_corruptions(tmp_path, obj, field):
    path = _pickle_file(tmp_path / "data_batch_4", obj)
    _expect_error(path, field, lambda: read_cifar_pickle_batch(path))


def test_cifar_pickle_truncated_and_garbage(tmp_path):
    x, y = _cifar(4)
    path = write_cifar_pickle_batch(tmp_path / "data_batch_1", x, y)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))
    path.write_bytes(b"\x89PNG not a pickle")
    _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))
    _expect_error(tmp_path / "absent", "file", lambda: read_cifar_pickle_batch(tmp_path / "absent"))


class _Evil:
    """Pickles to a call of os.system: what a hostile 'dataset' download would contain."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('PWNED').touch()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = {b"data": _Evil(f"touch {marker}"), b"labels": [0]}
    path = _pickle_file(tmp_path / "data_batch_1", payload, protocol)
    err = _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))
    assert "system" in str(err)
    assert not marker.exists()
    path = _pickle_file(tmp_path / "data_batch_2", {b"data": _EvalEvil(), b"labels": [0]}, protocol)
    _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))


def test_pickle_codecs_encode_only_latin1(tmp_path):
    """_codecs.encode is allowed for protocol-2 bytes, but not with another codec."""
    import _codecs

    class _Codec:
        def __reduce__(self):
            return (_codecs.encode, ("abc", "rot13"))

    path = _pickle_file(tmp_path / "test_batch", {b"data": _Codec(), b"labels": []})
    _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))


def test_pickle_object_class_refused(tmp_path):
    """A plain user class (copyreg reconstruction) is refused, not instantiated."""
    path = _pickle_file(tmp_path / "test_batch", {b"data": Path("x"), b"labels": []})
    _expect_error(path, "pickle", lambda: read_cifar_pickle_batch(path))


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------
def _touch_fmnist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").touch()
    return folder


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Explicit, env, system and cache folders, each holding a (file-name only) fashion-mnist."""
    explicit = _touch_fmnist(tmp_path / "explicit")
    env_root = tmp_path / "envroot"
    _touch_fmnist(env_root / "fashion-mnist")
    system = _touch_fmnist(tmp_path / "system" / "fashion-mnist")
    home = tmp_path / "home"
    cache = _touch_fmnist(home / ".cache" / "nitisim" / "fashion-mnist")
    monkeypatch.setenv("NITISIM_DATA", str(env_root))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(discovery, "SYSTEM_DIRS", {"fashion-mnist": str(system)})
    return {"explicit": explicit, "env": env_root / "fashion-mnist", "system": system, "cache": cache}


def test_discovery_order(places, monkeypatch):
    import shutil

    assert find_dataset("fashion-mnist", places["explicit"]) == places["explicit"]
    assert find_dataset("fashion-mnist") == places["env"]
    monkeypatch.delenv("NITISIM_DATA")
    assert find_dataset("fashion-mnist") == places["system"]
    shutil.rmtree(places["system"])
    assert find_dataset("fashion-mnist") == places["cache"]
    shutil.rmtree(places["cache"])
    err = _expect_error("fashion-mnist", "dataset", lambda: find_dataset("fashion-mnist"))
    msg = str(err)
    for needle in ("--data", "NITISIM_DATA", str(places["system"]), str(places["cache"]),
                   "apt-get install dataset-fashion-mnist"):
        assert needle in msg


def test_discovery_env_miss_falls_through_and_is_listed(places, monkeypatch, tmp_path):
    monkeypatch.setenv("NITISIM_DATA", str(tmp_path / "nowhere"))
    assert find_dataset("fashion-mnist") == places["system"]
    monkeypatch.setattr(discovery, "SYSTEM_DIRS", {})
    assert find_dataset("fashion-mnist") == places["cache"]


def test_discovery_env_is_dataset_folder_itself(tmp_path):
    folder = _touch_fmnist(tmp_path / "my-fmnist")
    got = find_dataset("fashion-mnist", environ={"NITISIM_DATA": str(folder)}, home=tmp_path, system_dirs={})
    assert got == folder


def test_discovery_env_does_not_mistake_mnist_for_fashion(tmp_path):
    mnist = _touch_fmnist(tmp_path / "data" / "mnist")  # same file names as Fashion-MNIST
    kw = dict(home=tmp_path / "home", system_dirs={})
    assert find_dataset("mnist", environ={"NITISIM_DATA": str(tmp_path / "data")}, **kw) == mnist
    assert find_dataset("mnist", environ={"NITISIM_DATA": str(mnist)}, **kw) == mnist
    with pytest.raises(UserInputError):
        find_dataset("fashion-mnist", environ={"NITISIM_DATA": str(tmp_path / "data")}, **kw)
    with pytest.raises(UserInputError):
        find_dataset("fashion-mnist", environ={"NITISIM_DATA": str(mnist)}, **kw)


def test_discovery_explicit_miss_is_an_error_not_a_fallback(places, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _expect_error(empty, "--data", lambda: find_dataset("fashion-mnist", empty))
    assert "holds no fashion-mnist files" in str(err)
    _expect_error(tmp_path / "missing", "--data", lambda: find_dataset("fashion-mnist", tmp_path / "missing"))


def test_discovery_explicit_parent_folder(tmp_path):
    _touch_fmnist(tmp_path / "root" / "FashionMNIST" / "raw")
    got = find_dataset("fashion-mnist", tmp_path / "root", environ={}, home=tmp_path, system_dirs={})
    assert got == tmp_path / "root" / "FashionMNIST" / "raw"


def test_discovery_cifar_in_cache(tmp_path, monkeypatch):
    out = tmp_path / "home" / ".cache" / "nitisim" / "cifar10" / "cifar-10-batches-py"
    out.mkdir(parents=True)
    (out / "data_batch_1").touch()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NITISIM_DATA", raising=False)
    assert find_dataset("cifar10") == out
    err = _expect_error("mnist", "dataset", lambda: find_dataset("mnist"))
    assert "apt-get" not in str(err) and str(tmp_path / "home" / ".cache" / "nitisim" / "mnist") in str(err)


def test_unknown_dataset_name():
    with pytest.raises(UserInputError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------
def test_to_int8_all_pixel_values():
    p = np.arange(256, dtype=np.uint8)
    m, e = to_int8(p)
    assert m.dtype == np.int8 and e == INPUT_EXP == -8
    assert (m[0], m[1], m[128], m[255]) == (-127, -127, 0, 127)
    np.testing.assert_array_equal(m[1:], np.arange(-127, 128))
    assert m.min() == -127  # -128 never appears


def test_to_int8_keeps_shape():
    x = _images(3, (4, 5, 3))
    m, _ = to_int8(x)
    assert m.shape == x.shape
    with pytest.raises(TypeError):
        to_int8(x.astype(np.int16))


def test_to_int8_normalized():
    p = np.arange(256, dtype=np.uint8)[:, None]  # (256, 1): one channel
    m0, e0 = to_int8_normalized(p, (128,), 0)
    np.testing.assert_array_equal(m0, to_int8(p)[0])
    assert e0 == -8
    m, e = to_int8_normalized(p, (100,), -1)  # halve: the whole 9-bit centred range fits
    assert e == -7 and m.dtype == np.int8
    exact = (np.arange(256) - 100) / 256
    assert np.abs(m[:, 0] * 2.0**e - exact).max() <= 2.0**e / 2
    m, e = to_int8_normalized(p, (120,), 2)  # magnify x4, saturate beyond +-127
    assert e == -10
    np.testing.assert_array_equal(m[:, 0], np.clip((np.arange(256) - 120) * 4, -127, 127))
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    m, _ = to_int8_normalized(rgb, (10, 10, 10), 0)
    assert m.tolist() == [[[0, 10, 20]]]
    with pytest.raises(ValueError):
        to_int8_normalized(rgb, (10, 10), 0)


def test_float_normalized():
    x = np.array([[[0, 255, 51]]], dtype=np.uint8)
    f = float_normalized(x, (0.0, 0.5, 0.2), (1.0, 0.5, 0.1))
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, [[[0.0, 1.0, 0.0]]], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_crop_flip_shape_dtype_determinism(dtype):
    x = _images(16, (8, 8, 3)).astype(dtype)
    a = random_crop_flip(x, 2, rng_seed=3, step=5)
    assert a.dtype == x.dtype and a.shape == x.shape
    np.testing.assert_array_equal(a, random_crop_flip(x, 2, rng_seed=3, step=5))
    assert not np.array_equal(a, random_crop_flip(x, 2, rng_seed=3, step=6))
    assert not np.array_equal(a, random_crop_flip(x, 2, rng_seed=4, step=5))


def test_flip_of_flip_is_identity():
    x = _images(32, (6, 7, 2))
    once = random_crop_flip(x, 0, rng_seed=1, step=9)
    assert not np.array_equal(once, x)  # some images were mirrored
    np.testing.assert_array_equal(random_crop_flip(once, 0, rng_seed=1, step=9), x)
    np.testing.assert_array_equal(hflip(hflip(x)), x)
    np.testing.assert_array_equal(random_crop_flip(x, 0, rng_seed=1, step=9, flip=False), x)


def test_crop_is_a_window_of_the_zero_padded_image():
    pad = 2
    x = _images(24, (5, 6, 1), seed=7) | 1  # no zero pixels, so padding is recognisable
    out = random_crop_flip(x, pad, rng_seed=0, step=0)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets_seen = set()
    for i in range(len(x)):
        hits = [
            (dy, dx, f)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for f in (False, True)
            if np.array_equal(out[i], (hflip if f else lambda a: a)(padded[i : i + 1, dy : dy + 5, dx : dx + 6])[0])
        ]
        assert hits, f"image {i} is not a window of its padded image"
        offsets_seen.add(hits[0])
    assert len(offsets_seen) > 3  # offsets and flips really vary across the batch


def test_batch_order_is_deterministic_permutation():
    a = batch_order(1000, epoch=3, seed=11)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, batch_order(1000, epoch=3, seed=11))
    assert not np.array_equal(a, batch_order(1000, epoch=4, seed=11))
    assert not np.array_equal(a, batch_order(1000, epoch=3, seed=12))
    assert batch_order(0, 0, 0).shape == (0,)


# ---------------------------------------------------------------------------------------------
# Synthetic and real datasets
# ---------------------------------------------------------------------------------------------
def test_synthetic_dataset_deterministic_and_learnable():
    d = synthetic_dataset(400, 200, (12, 12, 3), 5, seed=2)
    assert d.train_images.shape == (400, 12, 12, 3) and d.train_images.dtype == np.uint8
    assert d.test_labels.shape == (200,) and set(np.unique(d.train_labels)) == set(range(5))
    again = synthetic_dataset(400, 200, (12, 12, 3), 5, seed=2)
    np.testing.assert_array_equal(d.train_images, again.train_images)
    np.testing.assert_array_equal(d.test_labels, again.test_labels)
    assert not np.array_equal(d.train_images, synthetic_dataset(400, 200, (12, 12, 3), 5, seed=3).train_images)
    # nearest class mean: a learnable dataset is learnable by the simplest classifier
    flat = d.train_images.reshape(400, -1).astype(np.int64)
    means = np.stack([flat[d.train_labels == k].mean(axis=0) for k in range(5)])
    test = d.test_images.reshape(200, -1).astype(np.int64)
    pred = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == d.test_labels).mean() > 0.9


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    d = load_dataset("fashion-mnist", SYSTEM_FMNIST)
    assert d.train_images.shape == (60000, 28, 28, 1) and d.test_images.shape == (10000, 28, 28, 1)
    assert d.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(d.train_labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(d.test_labels, minlength=10), [1000] * 10)
    assert d.train_images.max() == 255 and d.train_images.min() == 0
