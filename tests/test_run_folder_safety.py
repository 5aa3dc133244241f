"""The run folder under hostile conditions: failed writes, torn or mixed metrics, stale temp files,
another data set on --resume, and a resume that asks for fewer epochs than the folder holds.

Failed writes are simulated by patching the writers to raise the OSError a full disk or read-only
mount gives (we run as root, so chmod would not stop them), after part of the bytes went out; one
test hits a real size limit (RLIMIT_FSIZE, EFBIG) in a subprocess. After each failure the
checkpoint must be the previous one, byte for byte, and resuming must end bit-identical to a run
that never failed.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.datasets import synthetic_dataset
from nitisim.datasets.idx import write_idx_folder
from nitisim.train import checkpoint, fp32, runfiles
from nitisim.train.checkpoint import load_int8, save_int8

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"
TRAIN = ["train", str(SYNTHETIC), "--backend", "numpy"]


def _train(out: Path, *extra: str) -> int:
    return main([*TRAIN, "--out", str(out), *extra])


def _epochs(out: Path) -> list[int]:
    return [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, np.ndarray]:
    params, _ = load_int8(out / "checkpoint.npz")
    return {k: t.m for k, t in params.items()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("nitisim: error: ") and not any("Traceback" in s for s in err), err
    return err[-1]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """Two epochs that never failed: what every recovered run must end as."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert _train(out) == 0
    return out


@pytest.fixture
def one_epoch(tmp_path) -> Path:
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1") == 0
    return out


def _fail_atomic_write_of(monkeypatch, module, name: str, code: int) -> None:
    """`module`'s atomic_write fails for destination `name`: some bytes reach the temp file, then OSError."""
    real = checkpoint.atomic_write

    def failing(path, write):
        if Path(path).name != name:
            return real(path, write)

        def half_then_fail(f):
            f.write(b"PK\x03\x04 part of the new file")
            raise OSError(code, os.strerror(code))

        return real(path, half_then_fail)

    monkeypatch.setattr(module, "atomic_write", failing)


def _fail_metrics_append(monkeypatch, code: int) -> None:
    """The metrics append writes half its line, then fails (a full disk in mid-write)."""
    def failing(self, line):
        with open(self.metrics, "a") as f:
            f.write(json.dumps(line)[:40])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runfiles.RunFolder, "append_metrics", failing)


@pytest.mark.parametrize("name, code", [("checkpoint.npz", errno.ENOSPC), ("metrics.jsonl", errno.EROFS),
                                        ("summary.json", errno.EDQUOT), ("timing.json", errno.EFBIG),
                                        ("checkpoint.npz", errno.EACCES)])
def test_a_failed_write_is_one_line_and_keeps_the_checkpoint(one_epoch, straight, capsys, monkeypatch, name, code):
    before = (one_epoch / "checkpoint.npz").read_bytes()
    if name == "metrics.jsonl":
        _fail_metrics_append(monkeypatch, code)
    else:
        _fail_atomic_write_of(monkeypatch, checkpoint, name, code)
    capsys.readouterr()
    assert _train(one_epoch, "--resume") == 2
    line = _one_line(capsys)
    assert line.startswith(f"nitisim: error: {one_epoch / name}: cannot write: {os.strerror(code)} "
                           f"(errno {errno.errorcode[code]}); the last checkpoint ({one_epoch / 'checkpoint.npz'}, "
                           f"after epoch"), line
    saved = 2 if name in ("summary.json", "timing.json") else 1  # these come after the epoch-2 checkpoint
    assert line.endswith(f"after epoch {saved}/2) is kept"), line
    if saved == 1:
        assert (one_epoch / "checkpoint.npz").read_bytes() == before
    assert not list(one_epoch.glob(".*.tmp"))
    monkeypatch.undo()  # space freed, mount writable again
    assert _train(one_epoch, "--resume") == 0
    assert _epochs(one_epoch) == [0, 1]
    a, b = _weights(straight), _weights(one_epoch)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_failed_first_save_says_nothing_is_kept(tmp_path, capsys, monkeypatch):
    _fail_atomic_write_of(monkeypatch, checkpoint, "checkpoint.npz", errno.ENOSPC)
    assert _train(tmp_path / "run", "--epochs", "1") == 2
    assert _one_line(capsys).endswith("; no checkpoint was written yet")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_fp32_failed_checkpoint_write_keeps_the_previous(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    fp = ["--arith", "fp32", "--device", "cpu"]
    assert main(["train", str(SYNTHETIC), *fp, "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    _fail_atomic_write_of(monkeypatch, fp32, "checkpoint.pt", errno.ENOSPC)
    capsys.readouterr()
    assert main(["train", str(SYNTHETIC), *fp, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    line = _one_line(capsys)
    assert f"{out / 'checkpoint.pt'}: cannot write: No space left on device" in line
    assert line.endswith("after epoch 1/2) is kept")
    assert (out / "checkpoint.pt").read_bytes() == before and not list(out.glob(".*.tmp"))


def test_real_file_size_limit_mid_run(one_epoch, straight):
    """A real write failure: RLIMIT_FSIZE below the checkpoint's size makes its write fail with EFBIG."""
    before = (one_epoch / "checkpoint.npz").read_bytes()
    limit = len(before) // 2  # the small files fit, the 230 KB checkpoint does not
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from nitisim.cli import main
        sys.exit(main({[*TRAIN, "--out", str(one_epoch), "--resume"]!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert line == (f"nitisim: error: {one_epoch / 'checkpoint.npz'}: cannot write: File too large (errno EFBIG); "
                    f"the last checkpoint ({one_epoch / 'checkpoint.npz'}, after epoch 1/2) is kept")
    assert (one_epoch / "checkpoint.npz").read_bytes() == before and not list(one_epoch.glob(".*.tmp"))
    assert _train(one_epoch, "--resume") == 0
    a, b = _weights(straight), _weights(one_epoch)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --- metrics.jsonl on resume ---------------------------------------------------------------------------------

def test_a_torn_last_metrics_line_is_dropped(one_epoch, straight):
    with open(one_epoch / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 1, "train_accuracy": 0.9')  # a kill mid-append: no newline, not JSON
    assert _train(one_epoch, "--resume") == 0
    lines = (one_epoch / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [0, 1]
    assert [json.loads(s)["test_accuracy"] for s in lines] == [m["test_accuracy"] for m in map(
        json.loads, (straight / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("damage, where", [
    (lambda t: "garbage\n" + t, "line 1: is not JSON"),
    (lambda t: t + "garbage\n", "line 2: is not JSON"),  # a whole last line (it has its newline) is no torn append
    (lambda t: t + "[1, 2]\n", "line 2: is not a metrics line"),
    (lambda t: t.replace('"seconds": ', '"seconds": "x", "was": '), "line 1: is not a metrics line"),
])
def test_bad_metrics_lines_are_one_line(one_epoch, capsys, damage, where):
    path = one_epoch / "metrics.jsonl"
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    capsys.readouterr()
    assert _train(one_epoch, "--resume") == 2
    assert _one_line(capsys).startswith(f"nitisim: error: {path}: {where}")
    assert path.read_bytes() == before


@pytest.mark.parametrize("lines", [[0, 0], [], [1]], ids=["two seeds mixed", "lines lost", "epoch 0 missing"])
def test_metrics_that_do_not_match_the_checkpoint_are_refused(tmp_path, capsys, lines):
    """The mix two writers used to leave (epoch 0 of two seeds), or lost lines, would give a wrong summary."""
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1") == 0
    line = json.loads((out / "metrics.jsonl").read_text())
    (out / "metrics.jsonl").write_text("".join(json.dumps({**line, "epoch": e}) + "\n" for e in lines))
    capsys.readouterr()
    assert _train(out, "--resume") == 2
    err = _one_line(capsys)
    assert err.startswith(f"nitisim: error: {out / 'metrics.jsonl'}: epoch: lines before the checkpoint are epochs "
                          f"{[e for e in lines if e < 1]}, the checkpoint holds epochs 0..0 once each")


# --- stale temp files ----------------------------------------------------------------------------------------

STALE = [".checkpoint.npz.k3j_x9a2.tmp", ".summary.json.abcdefgh.tmp", ".metrics.jsonl.0123abcd.tmp",
         ".timing.json.zzzzzzzz.tmp"]
NOT_OURS = [".checkpoint.npz.keep.tmp", ".checkpoint.npz.ABCDEFGH.tmp", "notes.tmp", ".other.abcdefgh.tmp",
            ".checkpoint.pt.abcdefgh.tmp", ".checkpoint.npz.abcdefgh.tmp.bak"]


@pytest.mark.parametrize("resume", [False, True])
def test_stale_temp_files_of_this_run_are_cleaned(one_epoch, resume):
    for name in STALE + NOT_OURS:
        (one_epoch / name).write_bytes(b"x")
    assert _train(one_epoch, *(["--resume"] if resume else ["--epochs", "1", "--overwrite"])) == 0
    left = sorted(p.name for p in one_epoch.iterdir())
    assert left == sorted(NOT_OURS + [".nitisim.lock", "checkpoint.npz", "metrics.jsonl", "summary.json",
                                      "timing.json"])


# --- the data set on resume ----------------------------------------------------------------------------------

def _mnist_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "mnist-mlp.yaml"
    cfg.write_text("model: mlp\ndataset: mnist\nbatch: 32\nepochs: 2\nmu_schedule: [{from_epoch: 0, mu: 2}]\n"
                   "eval_batch: 64\nfp32: {lr: 0.05, momentum: 0.9}\n")
    return cfg


def _idx(folder: Path, seed: int, gz: bool = True) -> Path:
    ds = synthetic_dataset(96, 32, (28, 28, 1), 10, seed=seed)
    return write_idx_folder(folder, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, gz=gz)


@pytest.mark.parametrize("arith, engine", [("int8", ["--backend", "numpy"]), ("fp32", ["--device", "cpu"])])
def test_resume_with_another_data_set_is_refused(tmp_path, capsys, arith, engine):
    cfg, out = _mnist_config(tmp_path), tmp_path / "run"
    first, other = _idx(tmp_path / "first", seed=3), _idx(tmp_path / "other", seed=4)
    same_moved = _idx(tmp_path / "moved" / "plain", seed=3, gz=False)
    args = ["train", str(cfg), "--arith", arith, *engine, "--out", str(out)]
    assert main([*args, "--data", str(first), "--epochs", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*args, "--data", str(other), "--resume"]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"nitisim: error: {other}: is not the data set the checkpoint in {out} was trained on")
    assert f"from {first})" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the same images and labels, stored without gzip in another folder, are the same data set
    assert main([*args, "--data", str(same_moved), "--resume"]) == 0
    assert _epochs(out) == [0, 1]


def test_old_checkpoint_without_fingerprint_resumes_with_a_note(one_epoch, capsys):
    params, meta = load_int8(one_epoch / "checkpoint.npz")
    meta = {k: v for k, v in meta.items() if k not in ("format", "dataset_fingerprint", "dataset_source")}
    save_int8(one_epoch / "checkpoint.npz", params, meta)  # as nitisim wrote it before fingerprints
    capsys.readouterr()
    assert _train(one_epoch, "--resume") == 0
    err = capsys.readouterr().err
    assert "records no data-set fingerprint" in err and "error" not in err
    _, meta = load_int8(one_epoch / "checkpoint.npz")
    assert meta["dataset_fingerprint"].startswith("sha256:")  # the next save records it


# --- fewer epochs than the folder holds ----------------------------------------------------------------------

def test_resume_asking_for_fewer_epochs_leaves_the_folder_untouched(straight, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.name != ".nitisim.lock"}
    capsys.readouterr()
    for epochs in ("1", "2"):
        assert _train(out, "--resume", "--epochs", epochs) == 0
        err = capsys.readouterr().err
        assert (f"the checkpoint in {out} already holds 2 epochs; nothing to train for --epochs {epochs}, the run "
                "folder is left as it is") in err
        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.name != ".nitisim.lock"}
        assert after == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["epochs"] == summary["epochs_done"] == 2


def test_a_fresh_run_into_a_trained_folder_is_refused_unless_overwrite(one_epoch, capsys):
    """A second `nitisim train` into the same --out used to delete the first run's trained weights."""
    before = {p.name: p.read_bytes() for p in one_epoch.iterdir() if p.is_file() and p.name != ".nitisim.lock"}
    assert _train(one_epoch) == 2
    assert _one_line(capsys) == (f"nitisim: error: {one_epoch}: holds a trained run (1 epoch in metrics.jsonl); "
                                 "--resume continues it, --overwrite starts afresh and deletes it, or pass another --out")
    assert {n: (one_epoch / n).read_bytes() for n in before} == before
    assert _train(one_epoch, "--resume", "--overwrite") == 2
    assert "--overwrite: deletes the run that --resume would continue" in _one_line(capsys)
    assert _train(one_epoch, "--overwrite", "--epochs", "2") == 0
    assert _epochs(one_epoch) == [0, 1]
