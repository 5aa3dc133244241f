"""The run folder's lock: one writer per folder, and an unwritable --out refused before any training.

A lock holder in another process stands in for a second `nitisim train` into the same --out: the
refusal depends only on the flock, not on what the holder does. We run as root, where chmod does
not stop a write, so unwritable folders are real paths even root cannot write (a file, a name over
255 bytes, a folder under /proc) or os.open patched to fail the way a read-only mount does.
"""
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.train import folder_lock
from nitisim.train.folder_lock import LOCK_NAME, locked_folder

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"
TRAIN = ["train", str(SYNTHETIC), "--backend", "numpy", "--epochs", "1"]
ENGINE = {"int8": ["--backend", "numpy"], "fp32": ["--device", "cpu"]}  # kernel table | torch device


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: 'touching nothing' means this does not change."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


class Holder:
    """A subprocess holding the lock on `folder` until released (or killed)."""

    def __init__(self, folder: Path):
        code = textwrap.dedent(f"""
            import sys
            from nitisim.train.folder_lock import locked_folder
            with locked_folder({str(folder)!r}):
                print("locked", flush=True)
                sys.stdin.read()
        """)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, cwd=ROOT)
        assert self.proc.stdout.readline() == b"locked\n"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)


@pytest.mark.parametrize("arith", ["int8", "fp32"])
def test_second_writer_is_refused_and_touches_nothing(tmp_path, capsys, arith):
    out = tmp_path / "run"
    train = ["train", str(SYNTHETIC), *ENGINE[arith], "--epochs", "1", "--arith", arith]
    assert main([*train, "--out", str(out)]) == 0
    (out / ".checkpoint.npz.abcd1234.tmp").write_bytes(b"a killed save")  # not cleaned by a refused run either
    holder = Holder(out)
    before = _snapshot(out)  # the holder has written its PID into the lock file
    try:
        capsys.readouterr()
        for extra in (["--overwrite"], ["--resume", "--epochs", "2"]):
            assert main([*train, "--out", str(out), *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "Traceback" not in err
            assert err.startswith(f"nitisim: error: {out}: in use by process {holder.proc.pid} (")
            assert "locked_folder" in err  # the holder's command line
            assert _snapshot(out) == before
    finally:
        holder.release()
    assert main([*train, "--out", str(out), "--overwrite"]) == 0  # a released lock lets the next run in


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    Holder(out).kill()  # kill -9: the kernel drops the flock with the process
    assert (out / LOCK_NAME).exists()
    assert main([*TRAIN, "--out", str(out)]) == 0


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with locked_folder(tmp_path / "f") as path:
        assert (path / LOCK_NAME).read_text().startswith(f"process {os.getpid()} (")
        with pytest.raises(UserInputError, match=f"in use by process {os.getpid()}"):
            with locked_folder(tmp_path / "f"):
                pass
    assert (tmp_path / "f" / LOCK_NAME).read_text() == ""  # released: no holder named any more
    with locked_folder(tmp_path / "f"):
        pass


def _refused_before_training(capsys, out: str, *words: str, extra: tuple[str, ...] = ()) -> str:
    """Run one epoch into `out`; it must fail with one line and never reach the first epoch."""
    assert main([*TRAIN, "--out", out, *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("nitisim: error: ") and "Traceback" not in err, err
    assert "epoch 1/1" not in err and "nitisim train:" not in err  # no header, no epoch: refused up front
    for word in words:
        assert word in err, (word, err)
    return err


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("user data\n")
    _refused_before_training(capsys, str(target), str(target), "is not a folder")
    assert target.read_text() == "user data\n"
    _refused_before_training(capsys, str(target / "sub"), "Not a directory (errno ENOTDIR)")


@pytest.mark.parametrize("extra", [(), ("--resume",)])
def test_out_name_too_long(tmp_path, capsys, extra):
    _refused_before_training(capsys, str(tmp_path / ("x" * 300)), "File name too long (errno ENAMETOOLONG)",
                             extra=extra)


def test_out_where_even_root_cannot_write(capsys):
    # /proc/sys is a folder that takes no new files, for root too
    _refused_before_training(capsys, "/proc/sys", f"/proc/sys/{LOCK_NAME}", "cannot write into the run folder")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT])
def test_read_only_or_full_folder_is_refused_before_training(tmp_path, capsys, monkeypatch, code):
    """os.open of the lock file fails as on a read-only mount / full disk (root ignores chmod, so patched)."""
    real_open = os.open

    def failing_open(path, flags, *args, **kwargs):
        if str(path).endswith(LOCK_NAME):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(folder_lock.os, "open", failing_open)
    _refused_before_training(capsys, str(tmp_path / "run"), LOCK_NAME, f"(errno {errno.errorcode[code]})")


def test_full_disk_at_the_probe_write(tmp_path, capsys, monkeypatch):
    """The lock file opens but its first bytes do not fit: the probe write is what fails (patched pwrite)."""
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(folder_lock.os, "pwrite", full)
    _refused_before_training(capsys, str(tmp_path / "run"), "No space left on device (errno ENOSPC)")
