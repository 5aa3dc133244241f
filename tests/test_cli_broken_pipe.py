"""A reader that leaves early (`nitisim models | head -1`) ends the command quietly: status 141
(128 + SIGPIPE, as the shell reports a writer whose pipe closed), no traceback."""
import sys
from types import SimpleNamespace

import nitisim.cli as cli


def test_broken_pipe_is_status_141_without_a_traceback(monkeypatch, capsys):
    def main(args):
        raise BrokenPipeError(32, "Broken pipe")

    redirected = []
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: SimpleNamespace(main=main, add_arguments=lambda p: None))
    monkeypatch.setattr(cli.os, "dup2", lambda fd, target: redirected.append(target))
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(fileno=lambda: 1234, flush=lambda: None))
    assert cli.main(["models"]) == 141
    assert redirected == [1234]  # stdout now points at /dev/null, so the exit's flush cannot fail again
    assert capsys.readouterr().err == ""

