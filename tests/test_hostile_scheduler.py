"""`nitisim sweep --scheduler` pointed at something that is not a Dask scheduler ends in one line, exit 2.

Each hostile peer is a loopback server started by the test on an ephemeral port and stopped by it:
a listener that accepts and never answers (what the dashboard port looks like to a Dask comm), an
HTTP server, and a Dask worker (a Dask peer, but not the scheduler). The sweep runs in a thread that
must come back; the join bound only stops a regression from hanging the suite, it is not a timing.
"""
import http.server
import socket
import threading

import pytest

from nitisim.cli import main

GRID = """
base: edge-16x16
model: mlp
batch: 8
parameters:
  dataflow: [ws, os]
"""
EXPECTED = "expected a Dask scheduler's comm port"


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    return path


def _sweep_in_thread(argv):
    """Run `nitisim sweep` in a thread; return its exit status (None if it never came back)."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("rc", main(argv)), daemon=True)
    t.start()
    t.join(60)  # far beyond the 1 s handshake bound; only guards the suite against a hang
    return box.get("rc")


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def silent_listener():
    """Accepts connections and never sends a byte, like a port whose service waits for its own protocol."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"tcp://127.0.0.1:{srv.getsockname()[1]}", accepted
    stop.set()
    t.join(5)
    for c in accepted:
        c.close()
    srv.close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # the server's own request log would land in the stderr under test
        pass


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield f"tcp://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join(5)


def test_listener_that_never_answers_is_one_line(capsys, grid, tmp_path, silent_listener):
    address, accepted = silent_listener
    rc = _sweep_in_thread(["sweep", str(grid), "--scheduler", address, "--scheduler-timeout", "1",
                           "--out", str(tmp_path / "o")])
    assert rc == 2
    err = _one_line(capsys)
    assert err == (f"nitisim: error: --scheduler: {address}: no Dask handshake within 1 s; {EXPECTED} "
                   "(tcp://HOST:8786 by default, not the 8787 dashboard)")
    assert accepted  # the connection did reach the listener: it is the handshake that timed out
    assert not (tmp_path / "o").exists()


def test_http_server_is_one_line(capsys, grid, tmp_path, http_server):
    rc = _sweep_in_thread(["sweep", str(grid), "--scheduler", http_server, "--scheduler-timeout", "1",
                           "--out", str(tmp_path / "o")])
    assert rc == 2
    err = _one_line(capsys)
    assert err.startswith(f"nitisim: error: --scheduler: {http_server}: ") and EXPECTED in err


def test_refused_connection_is_one_line_without_waiting_for_the_timeout(capsys, grid, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound then closed: nothing listens on this port now
    # a 600 s bound that the thread's 60 s join would expose if the refusal waited for it
    rc = _sweep_in_thread(["sweep", str(grid), "--scheduler", f"tcp://127.0.0.1:{port}",
                           "--scheduler-timeout", "600", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "connection refused (nothing listens there)" in _one_line(capsys)


@pytest.mark.parametrize("address, problem", [
    ("tcp://nohost:::", "not a scheduler address"),
    ("localhost", "not a scheduler address (missing port number"),
    ("tcp://no-such-host.invalid:8786", "cannot resolve host 'no-such-host.invalid'"),
])
def test_malformed_address_is_one_line(capsys, grid, tmp_path, address, problem):
    assert _sweep_in_thread(["sweep", str(grid), "--scheduler", address, "--out", str(tmp_path / "o")]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"nitisim: error: --scheduler: {address}: {problem}")


def test_a_dask_worker_is_not_a_scheduler(capsys, grid, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        worker = next(iter(cluster.scheduler_info["workers"]))
        rc = _sweep_in_thread(["sweep", str(grid), "--scheduler", worker, "--scheduler-timeout", "5",
                               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "a Dask Worker answered, not a scheduler" in _one_line(capsys)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_bad_scheduler_timeout_is_one_line(capsys, grid, value):
    assert main(["sweep", str(grid), "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", value]) == 2
    assert _one_line(capsys).startswith("nitisim: error: --scheduler-timeout: must be a positive number")
