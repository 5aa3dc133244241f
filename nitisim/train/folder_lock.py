"""An exclusive lock on an output folder: one writer at a time, and a folder proven writable first.

`locked_folder(path)` creates the folder, opens its lock file `.nitisim.lock` and takes an
exclusive `fcntl.flock` on it for the duration of the `with` block. The kernel drops a flock when
its holder's file is closed, which includes the process dying (kill -9 too), so a stale lock
cannot outlive a crashed run and there is no lock file to clean up by hand. The holder writes its
PID and command line into the lock file and fsyncs it: that write is the probe that the folder
takes a file at all (read-only mount, full disk, quota), before any work starts. A second writer
is refused with one line naming that holder and touches nothing in the folder.

flock is advisory and per open file: a second `locked_folder` on the same folder refuses even in
the same process, so nested use is a bug the lock reports rather than hides.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..contract.errors import UserInputError
from ..contract.values import shorten

LOCK_NAME = ".nitisim.lock"
_COMMAND_CHARS = 300  # the holder's command line is cut to this for the one-line refusal


def describe_os_error(err: OSError) -> str:
    """'No space left on device (errno ENOSPC)': the system's words plus the errno name to search for."""
    if err.errno is None:
        return str(err)
    name = errno.errorcode.get(err.errno, str(err.errno))
    return f"{os.strerror(err.errno)} (errno {name})"


@contextmanager
def locked_folder(path: str | Path, what: str = "run folder") -> Iterator[Path]:
    """Create `path` if needed and hold its lock inside the block; UserInputError when it is held or unwritable."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise UserInputError(str(path), None, f"exists and is not a folder; the {what} must be a folder")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a name over the file system's limit fails already in exists()
        raise UserInputError(str(path), None, f"cannot create the {what}: {describe_os_error(err)}") from None
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise UserInputError(str(lock), None, f"cannot write into the {what}: {describe_os_error(err)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(str(path), None, f"in use by {_holder(fd)}; wait for it to finish or choose "
                                 f"another folder") from None
        except OSError as err:
            raise UserInputError(str(lock), None, f"cannot lock the {what}: {describe_os_error(err)}") from None
        try:
            _write_holder(fd)
        except OSError as err:
            raise UserInputError(str(lock), None, f"cannot write into the {what}: {describe_os_error(err)}") from None
        try:
            yield path
        finally:
            try:
                os.ftruncate(fd, 0)  # still locked: nobody reads a finished holder's PID as the current one
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the flock


def _write_holder(fd: int) -> None:
    text = f"process {os.getpid()} ({_command()})\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    os.fsync(fd)  # a full disk or quota may only show at fsync (delayed allocation)


def _holder(fd: int) -> str:
    """The holder's own description, or a plain phrase while it has not written it yet."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text if text.startswith("process ") else "another process (no PID recorded yet)"


def _command() -> str:
    argv = getattr(sys, "orig_argv", None) or sys.argv
    text = shlex.join(argv)
    text = "".join(c if c.isprintable() else "?" for c in text)  # one line, whatever the arguments hold
    return shorten(text, _COMMAND_CHARS)
