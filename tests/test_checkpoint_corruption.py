"""A damaged checkpoint on --resume is one error line naming the file, for int8 (.npz) and fp32 (.pt)."""
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"
ENGINE = {"int8": ["--backend", "numpy"], "fp32": ["--device", "cpu"]}  # kernel table | torch device
CHECKPOINT = {"int8": "checkpoint.npz", "fp32": "checkpoint.pt"}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """one_epoch(arith): a run folder after one epoch, made once per module; each test resumes a copy."""
    made: dict[str, Path] = {}

    def get(arith: str) -> Path:
        if arith not in made:
            out = tmp_path_factory.mktemp(arith) / "run"
            assert main(["train", str(SYNTHETIC), "--arith", arith, *ENGINE[arith], "--epochs", "1",
                         "--out", str(out)]) == 0
            made[arith] = out
        return made[arith]

    return get


def _rezip(data: bytes, edit) -> bytes:
    """The zip `data` with each member passed through edit(name, bytes) -> bytes or None (dropped)."""
    src, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name in src.namelist():
            member = edit(name, src.read(name))
            if member is not None:
                dst.writestr(name, member)
    return buf.getvalue()


def _largest(data: bytes) -> str:
    """The biggest member: a weight tensor in either format (m/fc1.w.npy; <archive>/data/<n> for torch)."""
    return max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda i: i.file_size).filename


def _npy(value) -> bytes:
    buf = io.BytesIO()
    np.save(buf, value)
    return buf.getvalue()


DAMAGE = {
    "empty": lambda d: b"",
    "random bytes": lambda d: np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "truncated": lambda d: d[: len(d) // 2],
    "cut at 300 bytes": lambda d: d[:300],
    "zip of another file": lambda d: _one_member_zip(),
    "the largest member cut short": lambda d: _rezip(d, lambda n, b: b[: len(b) // 2] if n == _largest(d) else b),
    "the largest member missing": lambda d: _rezip(d, lambda n, b: None if n == _largest(d) else b),
}
# the .npz layout (meta.npy, m/<name>.npy, e/<name>.npy) allows sharper damage
NPZ_DAMAGE = {
    "no meta": lambda d: _rezip(d, lambda n, b: None if n == "meta.npy" else b),
    "meta not a mapping": lambda d: _rezip(d, lambda n, b: _npy(np.array("[1, 2]")) if n == "meta.npy" else b),
    "meta not JSON": lambda d: _rezip(d, lambda n, b: _npy(np.array("{epoch")) if n == "meta.npy" else b),
    "no exponent": lambda d: _rezip(d, lambda n, b: None if n == "e/fc1.w.npy" else b),
    "exponent not a scalar": lambda d: _rezip(d, lambda n, b: _npy(np.zeros(3, np.int64)) if n.startswith("e/") else b),
    "weight of another shape": lambda d: _rezip(d, lambda n, b: _npy(np.zeros((3, 3), np.int8))
                                                if n == "m/fc1.w.npy" else b),
    "weight of another dtype": lambda d: _rezip(d, lambda n, b: _npy(np.load(io.BytesIO(b)).astype(np.int32))
                                                if n == "m/fc1.w.npy" else b),
    "a pickled member": lambda d: _rezip(d, lambda n, b: _npy_pickle() if n == "m/fc1.w.npy" else b),
}


def _one_member_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return buf.getvalue()


def _npy_pickle() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _resume_one_line(tmp_path, capsys, arith, folder, data: bytes) -> str:
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    ckpt = run / CHECKPOINT[arith]
    ckpt.write_bytes(data)
    capsys.readouterr()
    assert main(["train", str(SYNTHETIC), "--arith", arith, *ENGINE[arith], "--epochs", "2",
                 "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"nitisim: error: {ckpt}: checkpoint"), err
    assert ckpt.read_bytes() == data  # a refused resume leaves the file for the user to inspect
    return err


@pytest.mark.parametrize("arith", ["int8", "fp32"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_one_line(tmp_path, capsys, one_epoch, damage, arith):
    folder = one_epoch(arith)
    data = DAMAGE[damage]((folder / CHECKPOINT[arith]).read_bytes())
    _resume_one_line(tmp_path, capsys, arith, folder, data)


@pytest.mark.parametrize("damage", sorted(NPZ_DAMAGE))
def test_damaged_npz_member_is_one_line(tmp_path, capsys, one_epoch, damage):
    folder = one_epoch("int8")
    data = NPZ_DAMAGE[damage]((folder / "checkpoint.npz").read_bytes())
    err = _resume_one_line(tmp_path, capsys, "int8", folder, data)
    if damage.startswith("weight of another"):
        assert "fc1.w" in err and "needs int8[256, 784]" in err


def test_fp32_checkpoint_of_other_content_is_one_line(tmp_path, capsys, one_epoch):
    """Readable torch files that are not this trainer's checkpoint: a bare tensor, tensors of other shapes."""
    import torch

    folder = one_epoch("fp32")
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    for i, content in enumerate((torch.zeros(3), {"model": state["model"], "meta": "x"},
                    {**state, "model": {k: torch.zeros(2, 2) for k in state["model"]}},
                    {**state, "optimizer": {"state": {}, "param_groups": []}})):
        buf = io.BytesIO()
        torch.save(content, buf)
        _resume_one_line(tmp_path / str(i), capsys, "fp32", folder, buf.getvalue())


@pytest.mark.parametrize("arith", ["int8", "fp32"])
def test_the_undamaged_copy_resumes(tmp_path, one_epoch, arith):
    """The damage, not the copying, is what the tests above refuse."""
    folder = one_epoch(arith)
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    assert main(["train", str(SYNTHETIC), "--arith", arith, *ENGINE[arith], "--epochs", "2",
                 "--out", str(run), "--resume"]) == 0
    assert [json.loads(s)["epoch"] for s in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
