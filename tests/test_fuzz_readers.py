"""Fuzzing every reader of user files: the answer is a parsed value or one UserInputError line.

Readers: model YAML, training config, accelerator and host configs, sweep grids, the config
`nitisim run` reads, IDX files and CIFAR-10 batches (pickled and binary). Inputs are arbitrary
bytes, byte-level mutations of valid files (which reach far more code than noise), and for the
YAML readers valid documents with one value swapped for a hostile one. Any other exception fails.

Each test runs FUZZ_EXAMPLES examples (set NITISIM_FUZZ_EXAMPLES to search longer).
"""
from __future__ import annotations

import argparse
import copy
import gzip
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitisim.contract.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES = int(os.environ.get("NITISIM_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Byte strings that mean something to YAML or to a reader's range checks.
TOKENS = [b".inf", b"-.inf", b".nan", b"1e999", b"1.0e+999", b"-1", b"0", b"null", b"~", b"true", b"[", b"]",
          b"{", b"}", b"&a ", b"*a", b"<<: *a", b"!!binary ", b"!!set ", b"!!float ", b"!!int ", b"!!str ",
          b"? ", b"- ", b"\t", b"'", b'"', b"\xff", b"\x00", b"2026-13-40", b"1:30", b"0x", b"0o9",
          b"99999999999999999999999999999", b"\n", b": ", b", ", b"---\n", b"...\n", b"%YAML 1.1\n",
          b"\"\\0\"", b"\"\\ud800\"", b"#", b"|", b">", b"!", b"@", b"`", b"%", "é".encode(), b"\xef\xbb\xbf"]
HOSTILE_VALUES = [float("inf"), float("-inf"), float("nan"), -1, 0, 1, 2**53 + 1, 10**40, -(10**40), 0.5,
                  -0.0, 1e-320, True, False, None, "", "x", "\x00", "a" * 300, "../../etc/passwd", "8x8",
                  "1e999", [], [1], [[[]]], {}, {"a": 1}, {1: 2}, "edge-16x16", "lenet", "ws"]


@st.composite
def mutated(draw: Any, seeds: list[bytes]) -> bytes:
    """One seed with 1-6 edits: flip or drop bytes, insert a token, duplicate or cut a slice."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "token", "delete", "duplicate", "truncate", "byte"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "duplicate":
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
        elif op == "truncate":
            del data[pos:]
        elif op == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


def _leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    """Key paths of every value (leaves and collections) in a parsed YAML document."""
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _leaves(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _leaves(v, path + (i,))
    return out


@st.composite
def value_swapped(draw: Any, seeds: list[bytes]) -> bytes:
    """A valid document with 1-2 values replaced by hostile ones (or a key dropped), re-dumped."""
    doc = yaml.safe_load(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 2))):
        paths = _leaves(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))  # never shared
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def inputs(seeds: list[bytes], yaml_values: bool = True) -> st.SearchStrategy[bytes]:
    options = [st.binary(max_size=512), mutated(seeds)]
    if yaml_values:
        options.append(value_swapped(seeds))
    return st.one_of(*options)


def parses_or_refuses(call: Callable[[], Any]) -> None:
    """`call()` returns, or raises a one-line UserInputError; anything else propagates and fails."""
    try:
        call()
    except UserInputError as err:
        assert "\n" not in str(err) and len(str(err)) < 2000, str(err)


def _seeds(*globs: str) -> list[bytes]:
    files = [p for g in globs for p in sorted(ROOT.glob(g))]
    assert files, globs
    return [p.read_bytes() for p in files]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A scratch copy of configs/ so a training config's relative model path still resolves."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "configs", root / "configs")
    return root


def _write(work: Path, sub: str, data: bytes) -> Path:
    path = work / "configs" / sub / "fuzzed.yaml"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# YAML readers
# ---------------------------------------------------------------------------------------------
MODEL_SEEDS = _seeds("configs/models/*.yaml") + [
    b"name: tiny\ninput: [28, 28, 1]\nclasses: 10\nlayers:\n  - conv: {out: 4, kernel: 3, stride: 1, padding: 1}\n"
    b"  - relu\n  - maxpool: {kernel: 2, stride: 2}\n  - flatten\n  - dropout: {rate: 0.5}\n  - linear: {out: 10}\n"]
TRAIN_SEEDS = _seeds("configs/train/*.yaml")
ACCELERATOR_SEEDS = _seeds("configs/accelerators/*.yaml")
HOST_SEEDS = _seeds("configs/hosts/*.yaml")
SWEEP_SEEDS = _seeds("configs/sweeps/*.yaml") + [
    b"base: edge-16x16\nmodel: lenet\nbatch: 8\nparameters:\n  rows: [8, 16]\n  cols: [8]\n  clock_mhz: [500, 250.5]\n"
    b"  ifmap_kib: [64]\n  dram_bandwidth_gb_s: [12.5]\n  vector_lanes: [16]\n"]


@FUZZ
@given(data=inputs(MODEL_SEEDS))
def test_fuzz_model_yaml(work, data):
    from nitisim.contract.models import resolve_model

    path = _write(work, "models", data)
    parses_or_refuses(lambda: resolve_model(str(path)))


@FUZZ
@given(data=inputs(TRAIN_SEEDS))
def test_fuzz_training_config(work, data):
    from nitisim.train.config import load_config

    path = _write(work, "train", data)
    parses_or_refuses(lambda: load_config(path))


@FUZZ
@given(data=inputs(ACCELERATOR_SEEDS))
def test_fuzz_accelerator_config(work, data):
    from hwmodels.config import load_accelerator

    path = _write(work, "accelerators", data)
    parses_or_refuses(lambda: load_accelerator(path))


@FUZZ
@given(data=inputs(HOST_SEEDS))
def test_fuzz_host_config(work, data):
    from hwmodels.config import load_accelerator

    path = _write(work, "hosts", data)
    parses_or_refuses(lambda: load_accelerator(path))


@FUZZ
@given(data=inputs(SWEEP_SEEDS))
def test_fuzz_sweep_grid(work, data):
    import json

    from hwmodels.config import parse_accelerator
    from hwmodels.sweep import expand, load_grid

    path = _write(work, "sweeps", data)

    def read_and_expand():  # what a sweep does before simulating: each point read by the loader
        for task in expand(load_grid(path))[:4]:
            try:
                parse_accelerator(json.loads(task.doc_json), task.source)
            except UserInputError:
                pass  # an infeasible point is a result of the sweep, not an error

    parses_or_refuses(read_and_expand)


@FUZZ
@given(data=inputs(TRAIN_SEEDS))
def test_fuzz_run_config(work, data):
    """`nitisim run --config`: the reading and planning before any training starts."""
    from nitisim.run_cli import plan

    path = _write(work, "train", data)
    args = argparse.Namespace(config=str(path), tiny=False, epochs=None, train_subset=None, backend=None,
                              device=None)
    parses_or_refuses(lambda: plan(args, work / "run-out"))


# ---------------------------------------------------------------------------------------------
# Dataset files
# ---------------------------------------------------------------------------------------------
def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


_rng = np.random.default_rng(0)
_IDX_RAW = [_idx(_rng.integers(0, 10, 12, dtype=np.uint8)), _idx(_rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)),
            _idx(_rng.integers(0, 256, (2, 4, 5), dtype=np.uint8))]
IDX_SEEDS = _IDX_RAW + [gzip.compress(b, mtime=0) for b in _IDX_RAW]


@FUZZ
@given(data=inputs(IDX_SEEDS, yaml_values=False))
def test_fuzz_idx_reader(work, data):
    from nitisim.datasets.idx import read_idx, read_idx_images, read_idx_labels

    path = work / "fuzzed-idx"
    path.write_bytes(data)
    for call in (read_idx, read_idx_labels, read_idx_images):
        parses_or_refuses(lambda: call(path))


def _cifar_pickle(n: int, protocol: int, changes: dict | None = None) -> bytes:
    batch = {b"batch_label": b"fuzz", b"labels": [i % 10 for i in range(n)],
             b"data": _rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * n}
    batch.update(changes or {})
    return pickle.dumps(batch, protocol=protocol)


# Small batches so a mutation lands in the structure, not only in pixel bytes.
CIFAR_PICKLE_SEEDS = [_cifar_pickle(1, 2), _cifar_pickle(2, 4), _cifar_pickle(1, 5),
                      _cifar_pickle(1, 2, {b"labels": np.array([3])}),
                      pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": (1,)}, protocol=2)]
CIFAR_BIN_SEEDS = [bytes([3]) + bytes(range(256)) * 12, (bytes([9]) + bytes(3072)) * 2]


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated(CIFAR_PICKLE_SEEDS)))
def test_fuzz_cifar_pickle_batch(work, data):
    from nitisim.datasets.cifar import read_cifar_pickle_batch

    path = work / "fuzzed-batch"
    path.write_bytes(data)
    parses_or_refuses(lambda: read_cifar_pickle_batch(path))


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated(CIFAR_BIN_SEEDS)))
def test_fuzz_cifar_bin_batch(work, data):
    from nitisim.datasets.cifar import read_cifar_bin_batch

    path = work / "fuzzed-batch.bin"
    path.write_bytes(data)
    parses_or_refuses(lambda: read_cifar_bin_batch(path))
