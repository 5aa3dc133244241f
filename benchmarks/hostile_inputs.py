"""Hostile inputs, tried as a user would: every reported way to break nitisim, run and tallied.

Each case builds its input in a fresh folder, runs the real command (`python -m nitisim ...` in a
subprocess with a time limit, or one library call in a subprocess of its own) and sorts the
outcome into one of:

- clean:     the input was refused with one `nitisim: error:` line, exit status 2, no traceback;
- handled:   the input is legal and the command did the right thing (a resume that repairs a torn
             metrics line, a second writer that was kept out while the first run finished intact);
- traceback: a Python traceback reached the terminal;
- silent:    a wrong or refused input was accepted, or a number wrapped, without a word;
- lost:      something a user wrote or trained was damaged;
- hang:      the command was still running at its time limit;
- other:     anything else (several error lines, a wrong exit status), with the detail.

Cases that need privileges this machine may not grant (a tmpfs mount for a full or read-only disk,
dropping to user `nobody` for a folder without read permission) report `not tried` with the reason
instead of a result. The tests under tests/ cover the same cases without those privileges; this
script is the end-to-end record, and writes the reliability section of docs/results.md.

    python benchmarks/hostile_inputs.py              # every case, then docs/results.md
    python benchmarks/hostile_inputs.py --no-write   # print the table only
    python benchmarks/hostile_inputs.py --only lock  # the cases whose name contains "lock"
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))  # idx_folder writes its fixtures with nitisim's own IDX writer
from results_md import write_section  # noqa: E402

TIME_LIMIT_S = 120  # per command; a clean refusal takes a second or two

TINY_TRAIN = """\
model: mlp
dataset: synthetic
synthetic: {train: 256, test: 128}
batch: 64
epochs: 2
mu_schedule:
  - {from_epoch: 0, mu: 2}
seed: 1
eval_batch: 64
"""

FMNIST_TRAIN = """\
model: mlp
dataset: fashion-mnist
batch: 32
epochs: 2
mu_schedule:
  - {from_epoch: 0, mu: 2}
seed: 1
eval_batch: 64
"""


@dataclass(frozen=True)
class Outcome:
    verdict: str  # clean | handled | traceback | silent | lost | hang | other | not tried
    detail: str  # the one error line, or what went wrong


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # the heading the case comes from
    what: str  # the input, in words
    run: Callable[[Path], Outcome]


# ---------------------------------------------------------------- running commands


@dataclass(frozen=True)
class Ran:
    rc: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    limit_s: float  # the time limit it ran under


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def nitisim(cwd: Path, *argv: str, limit_s: float = TIME_LIMIT_S, env: dict[str, str] | None = None) -> Ran:
    """`python -m nitisim ARGV` in `cwd`, killed at `limit_s`."""
    return _run([sys.executable, "-m", "nitisim", *argv], cwd, limit_s, env)


def python(cwd: Path, code: str, limit_s: float = TIME_LIMIT_S, env: dict[str, str] | None = None) -> Ran:
    return _run([sys.executable, "-c", textwrap.dedent(code)], cwd, limit_s, env)


def _run(cmd: list[str], cwd: Path, limit_s: float, env: dict[str, str] | None) -> Ran:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=limit_s, env=env or _env(),
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        return Ran(None, _text(err.stdout), _text(err.stderr), limit_s)
    return Ran(p.returncode, p.stdout, p.stderr, limit_s)


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _broke(ran: Ran) -> Outcome | None:
    """'hang' or 'traceback' when the command ended either way, else None."""
    if ran.rc is None:
        return Outcome("hang", f"still running after {ran.limit_s:g} s")
    if "Traceback" in ran.stderr:
        return Outcome("traceback", _last_line(ran.stderr))
    return None


def refused(ran: Ran, *must_name: str) -> Outcome:
    """The verdict for a command that must refuse its input with one line naming `must_name`."""
    broke = _broke(ran)
    if broke:
        return broke
    if ran.rc == 0:
        return Outcome("silent", "exit 0: " + (_last_line(ran.stderr) or _last_line(ran.stdout)))
    errors = [ln for ln in ran.stderr.splitlines() if ln.startswith("nitisim: error:")]
    if ran.rc != 2 or len(errors) != 1:
        return Outcome("other", f"exit {ran.rc}, {len(errors)} error lines: {_last_line(ran.stderr)}")
    missing = [s for s in must_name if s not in errors[0]]
    if missing:
        return Outcome("other", f"the line does not name {missing}: {errors[0]}")
    return Outcome("clean", errors[0])


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def succeeded(ran: Ran) -> Outcome | None:
    """None when the command ran to exit 0; else the verdict of its failure."""
    if ran.rc == 0:
        return None
    return _broke(ran) or Outcome("other", f"exit {ran.rc}: {_last_line(ran.stderr)}")


# ---------------------------------------------------------------- inputs


def tiny_config(folder: Path, extra: str = "", text: str = TINY_TRAIN) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(text + extra)
    return path


def model_config(folder: Path, layers: str, input_shape: str = "[28, 28, 1]") -> Path:
    """A training config on synthetic data for a model YAML with `layers`."""
    (folder / "model.yaml").write_text(f"input: {input_shape}\nclasses: 10\nlayers:\n{layers}")
    return tiny_config(folder, text=TINY_TRAIN.replace("model: mlp", "model: model.yaml"))


def idx_folder(folder: Path, seed: int, n_train: int = 256, n_test: int = 64, white: bool = False) -> Path:
    """An MNIST-format folder of random images (or all pixels 255, `white`) and labels."""
    import numpy as np

    from nitisim.datasets.idx import write_idx_folder

    rng = np.random.default_rng(seed)
    lo = 255 if white else 0
    return write_idx_folder(folder, rng.integers(lo, 256, (n_train, 28, 28), dtype=np.uint8),
                            rng.integers(0, 10, n_train).astype(np.uint8),
                            rng.integers(lo, 256, (n_test, 28, 28), dtype=np.uint8),
                            rng.integers(0, 10, n_test).astype(np.uint8))


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path | None]:
    """A tmpfs mounted at `folder` with `options`, or None where this machine forbids mounting."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def trained(folder: Path, *argv: str) -> Path:
    """A finished 2-epoch tiny run in folder/run (the starting point of the resume cases)."""
    config = tiny_config(folder)
    ran = nitisim(folder, "train", str(config), "--backend", "numpy", "--out", "run", *argv)
    if ran.rc != 0:
        raise RuntimeError(f"the tiny run itself failed: {ran.stderr[-500:]}")
    return folder / "run"


# ---------------------------------------------------------------- the cases

def overflow_library(engine: str, fused: bool) -> Callable[[Path], Outcome]:
    call = ("lib.conv2d_forward_requantize(x, w, 1, 0, 0, 'nearest')" if fused else "lib.conv2d_forward(x, w, 1, 0)")

    def case(d: Path) -> Outcome:
        ran = python(d, f"""
            import numpy as np
            from gpu_backend.lib import engine_library
            from nitisim.contract.errors import IntegerOverflowError
            lib = engine_library({engine!r})
            x = np.full((1, 1, 1, 140000), 127, np.int8)   # K = 140,000 > 133,144 = INT32_MAX // 127**2
            w = np.full((4, 1, 1, 140000), 127, np.int8)
            try:
                out = {call}
            except IntegerOverflowError as err:
                print("detected:", err)
            else:
                print("WRAPPED:", np.asarray(out[0] if isinstance(out, tuple) else out).ravel()[:1])
        """)
        if "detected:" in ran.stdout:
            return Outcome("clean", _last_line(ran.stdout))
        if "WRAPPED" in ran.stdout:
            return Outcome("silent", _last_line(ran.stdout))
        return Outcome("traceback" if "Traceback" in ran.stderr else "other", _last_line(ran.stderr))
    return case


def overflow_cli(d: Path) -> Outcome:
    """A real overflow in the real kernels: a checkpoint whose weights were all set to 127, resumed on
    white images, drives layer fc2's 200,000-term sums (activations 96 after fc1, weights 127) past int32."""
    data = idx_folder(d / "data", 0, n_train=64, n_test=32, white=True)
    (d / "model.yaml").write_text("input: [28, 28, 1]\nclasses: 10\nlayers:\n  - flatten\n"
                                  "  - linear: {out: 200000}\n  - relu\n  - linear: {out: 10}\n")
    config = tiny_config(d, text=FMNIST_TRAIN.replace("model: mlp", "model: model.yaml").replace("epochs: 2", "epochs: 1"))
    run = ["train", str(config), "--backend", "cpu", "--data", str(data), "--out", "run"]
    first = nitisim(d, *run)
    if first.rc != 0:
        return succeeded(first)
    ckpt = d / "run" / "checkpoint.npz"
    patch = python(d, f"""
        import numpy as np
        z = dict(np.load({str(ckpt)!r}))
        for k in z:
            if k.startswith("m/") and k.endswith(".w"):
                z[k] = np.full_like(z[k], 127)
        np.savez({str(ckpt)!r}, **z)
    """)
    if patch.rc != 0:
        return Outcome("other", "harness: patching the checkpoint failed: " + _last_line(patch.stderr))
    kept = ckpt.read_bytes()
    out = refused(nitisim(d, *run, "--resume", "--epochs", "2"), "overflow", "fc2")
    if ckpt.read_bytes() != kept:
        return Outcome("lost", "the checkpoint changed after the overflow")
    return out


def second_writer(d: Path) -> Outcome:
    config = tiny_config(d, text=TINY_TRAIN.replace("epochs: 2", "epochs: 3").replace("train: 256", "train: 40000"))
    first = subprocess.Popen([sys.executable, "-m", "nitisim", "train", str(config), "--backend", "numpy",
                              "--out", "run", "--seed", "1"], cwd=d, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (d / "run").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the first run's 3 epochs (about 20 s)
    second = nitisim(d, "train", str(config), "--backend", "numpy", "--out", "run", "--seed", "2", "--overwrite")
    running = first.poll() is None  # the refusal must have met a live first run, not a finished one
    first_out, first_err = first.communicate(timeout=TIME_LIMIT_S)
    verdict = refused(second, "run", "in use by process")
    if first.returncode != 0:
        return Outcome("lost", f"the first run failed: {_last_line(first_err)}")
    lines = [json.loads(s) for s in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((d / "run" / "summary.json").read_text())
    if [m["epoch"] for m in lines] != [0, 1, 2] or summary["config"]["seed"] != 1:
        return Outcome("lost", f"metrics epochs {[m['epoch'] for m in lines]}, summary seed {summary['config']['seed']}")
    if not running:
        return Outcome("other", "harness: the first run ended before the second started")
    return verdict


class _Http(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server spelling)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>not a scheduler</html>")

    def log_message(self, *args) -> None:
        pass


def dask_http(d: Path) -> Outcome:
    server = HTTPServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        return refused(nitisim(d, "sweep", str(REPO / "configs/sweeps/example.yaml"), "--scheduler",
                               f"tcp://127.0.0.1:{port}", "--out", "sweep", limit_s=90), f"127.0.0.1:{port}")
    finally:
        server.shutdown()


def dask_silent(d: Path) -> Outcome:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts into the backlog and never says a word
    try:
        port = listener.getsockname()[1]
        return refused(nitisim(d, "sweep", str(REPO / "configs/sweeps/example.yaml"), "--scheduler",
                               f"tcp://127.0.0.1:{port}", "--out", "sweep", limit_s=90), f"127.0.0.1:{port}")
    finally:
        listener.close()


def corrupt_checkpoint(damage: Callable[[bytes], bytes], arith: str = "int8") -> Callable[[Path], Outcome]:
    def case(d: Path) -> Outcome:
        config = tiny_config(d)
        engine = ["--backend", "numpy"] if arith == "int8" else ["--device", "cpu"]
        ran = nitisim(d, "train", str(config), *engine, "--arith", arith, "--out", "run")
        if ran.rc != 0:
            return succeeded(ran)
        run = d / "run"
        ckpt = run / ("checkpoint.npz" if arith == "int8" else "checkpoint.pt")
        ckpt.write_bytes(damage(ckpt.read_bytes()))
        return refused(nitisim(d, "train", str(config), *engine, "--arith", arith, "--out", "run",
                               "--resume", "--epochs", "3"), "checkpoint")
    return case


def out_is_file(d: Path) -> Outcome:
    (d / "taken").write_text("a user's file\n")
    out = refused(nitisim(d, "train", str(tiny_config(d)), "--backend", "numpy", "--out", "taken"), "taken")
    if (d / "taken").read_text() != "a user's file\n":
        return Outcome("lost", "the file given as --out was changed")
    return out


def out_name_too_long(d: Path) -> Outcome:
    return refused(nitisim(d, "train", str(tiny_config(d)), "--backend", "numpy", "--out", "r" * 300))


def out_read_only(d: Path) -> Outcome:
    with tmpfs(d / "ro", "ro,size=1m") as mount:
        if mount is None:
            return Outcome("not tried", "mounting a tmpfs is not permitted here")
        t0 = time.monotonic()
        out = refused(nitisim(d, "train", str(tiny_config(d, text=TINY_TRAIN.replace("train: 256", "train: 4096"))),
                              "--backend", "numpy", "--out", str(mount / "run")), "run")
        if out.verdict == "clean" and "epoch" in out.detail and time.monotonic() - t0 > 30:
            return Outcome("other", "refused only after training: " + out.detail)
        return out


def out_full_disk(d: Path) -> Outcome:
    with tmpfs(d / "full", "size=64k") as mount:  # the metrics fit, the checkpoint does not
        if mount is None:
            return Outcome("not tried", "mounting a tmpfs is not permitted here")
        return refused(nitisim(d, "train", str(tiny_config(d)), "--backend", "numpy", "--out", str(mount / "run")),
                       "space")


def config_bytes(content: bytes, command: str = "train") -> Callable[[Path], Outcome]:
    def case(d: Path) -> Outcome:
        path = d / "bad.yaml"
        path.write_bytes(content)
        if command == "train":
            ran = nitisim(d, "train", str(path), "--backend", "numpy", "--out", "run")
        else:
            ran = nitisim(d, "simulate", str(path), "--model", "lenet", "--batch", "8", "--out", "sim")
        out = refused(ran, "bad.yaml")
        if out.verdict == "clean" and len(out.detail) > 400:
            return Outcome("other", f"a {len(out.detail)}-character error line")
        return out
    return case


def accelerator_with(field_line: str, replace: str) -> Callable[[Path], Outcome]:
    base = (REPO / "configs/accelerators/edge-16x16.yaml").read_text()
    return config_bytes(base.replace(replace, field_line).encode(), command="simulate")


def alias_bomb() -> bytes:
    """A training config whose `batch` is nine levels of ten aliases each: 10**9 leaves in 0.5 KB."""
    levels = ["&a [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"&{c} [" + ", ".join([f"*{p}"] * 10) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
    return TINY_TRAIN.replace("\nbatch: 64", "\nbatch: [" + ", ".join(levels) + "]").encode()


def gzip_bomb(d: Path) -> Outcome:
    data = idx_folder(d / "data", 0)
    header = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 256, 28, 28)  # declares 256 images
    with gzip.open(data / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(3000):  # 3 GB of zeros behind a 200 KB header: about 3 MB on disk
            f.write(zeros)
    ran = nitisim(d, "train", str(tiny_config(d, text=FMNIST_TRAIN)), "--backend", "numpy", "--data", str(data),
                  "--out", "run")
    return refused(ran, "train-images")


def unreadable_data(d: Path) -> Outcome:
    data = idx_folder(d / "data", 0)
    data.chmod(0o000)
    # root reads any folder; without these two capabilities it obeys the folder's mode like anyone
    ran = _run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search", sys.executable, "-m", "nitisim", "train",
                str(tiny_config(d, text=FMNIST_TRAIN)), "--backend", "numpy", "--data", str(data), "--out", "run"],
               d, TIME_LIMIT_S, None)
    data.chmod(0o755)
    if ran.rc == 127 or "setpriv" in ran.stderr[:200]:
        return Outcome("not tried", "setpriv cannot drop capabilities here")
    return refused(ran, str(data))


def empty_data(d: Path) -> Outcome:
    return refused(nitisim(d, "train", str(tiny_config(d, text=FMNIST_TRAIN)), "--backend", "numpy", "--data", "",
                           "--out", "run"), "--data")


def big_model(layers: str, input_shape: str = "[28, 28, 1]") -> Callable[[Path], Outcome]:
    def case(d: Path) -> Outcome:
        return refused(nitisim(d, "train", str(model_config(d, layers, input_shape)), "--backend", "numpy",
                               "--out", "run"), "memory")
    return case


def deep_model(d: Path) -> Outcome:
    """5,000 linear layers with their ReLUs: each layer moves the exponent, so the logits' leaves range."""
    config = model_config(d, "  - flatten\n" + "  - linear: {out: 16}\n  - relu\n" * 5000 + "  - linear: {out: 10}\n")
    ran = nitisim(d, "train", str(config), "--backend", "cpu", "--out", "run", "--epochs", "1")
    if ran.rc == 0:
        return Outcome("handled", "trained")
    return refused(ran)


def resume_other_data(d: Path) -> Outcome:
    a, b = idx_folder(d / "a", 0), idx_folder(d / "b", 1)
    config = tiny_config(d, text=FMNIST_TRAIN)
    first = nitisim(d, "train", str(config), "--backend", "numpy", "--data", str(a), "--out", "run", "--epochs", "1")
    if first.rc != 0:
        return succeeded(first)
    return refused(nitisim(d, "train", str(config), "--backend", "numpy", "--data", str(b), "--out", "run",
                           "--resume"), "data")


def resume_torn_metrics(d: Path) -> Outcome:
    config = tiny_config(d)
    run = d / "run"
    first = nitisim(d, "train", str(config), "--backend", "numpy", "--out", "run", "--epochs", "1")
    if first.rc != 0:
        return succeeded(first)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "train_acc')  # a kill in the middle of the next epoch's line
    ran = nitisim(d, "train", str(config), "--backend", "numpy", "--out", "run", "--resume")
    failed = succeeded(ran)
    if failed:
        return failed
    epochs = [json.loads(s)["epoch"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    return Outcome("handled" if epochs == [0, 1] else "other", f"metrics epochs after the resume: {epochs}")


def resume_stale_temp(d: Path) -> Outcome:
    run = trained(d)
    stale = run / ".checkpoint.npz.k3j2h1ab.tmp"  # mkstemp's 8 random characters
    stale.write_bytes(b"half a checkpoint")
    ran = nitisim(d, "train", str(tiny_config(d)), "--backend", "numpy", "--out", "run", "--resume", "--epochs", "3")
    failed = succeeded(ran)
    if failed:
        return failed
    return Outcome("silent", "the stale temp file is still there") if stale.exists() else \
        Outcome("handled", "the stale temp file was removed")


def resume_fewer_epochs(d: Path) -> Outcome:
    run = trained(d)
    ran = nitisim(d, "train", str(tiny_config(d)), "--backend", "numpy", "--out", "run", "--resume", "--epochs", "1")
    if ran.rc is None or "Traceback" in ran.stderr:
        return succeeded(ran)
    summary = json.loads((run / "summary.json").read_text())
    if summary["config"]["epochs"] < summary["epochs_done"]:
        return Outcome("silent", f"config.epochs {summary['config']['epochs']} beside epochs_done "
                                 f"{summary['epochs_done']}")
    return Outcome("handled" if ran.rc == 0 else "clean", _last_line(ran.stderr) or "summary consistent")


def run_bad_accelerator(d: Path) -> Outcome:
    bad = d / "broken-accel.yaml"
    bad.write_text((REPO / "configs/accelerators/edge-16x16.yaml").read_text().replace("clock_mhz: 500",
                                                                                       "clock_mhz: fast"))
    t0 = time.monotonic()
    ran = nitisim(d, "run", "--tiny", "--out", "out", "--accelerators", str(bad))
    out = refused(ran, "broken-accel.yaml", "clock_mhz")
    if out.verdict == "clean" and (d / "out" / "runs").exists():
        return Outcome("other", f"refused after training ({time.monotonic() - t0:.0f} s): {out.detail}")
    return out


CASES: tuple[Case, ...] = (
    Case("overflow-conv-avx512vnni", "silent wrong numbers", "conv K = 140,000 of 127s, VNNI engine, unfused",
         overflow_library("avx512vnni", fused=False)),
    Case("overflow-conv-avx512vnni-fused", "silent wrong numbers", "the same conv fused with its requantize",
         overflow_library("avx512vnni", fused=True)),
    Case("overflow-conv-avx2", "silent wrong numbers", "the same conv, AVX2 engine",
         overflow_library("avx2", fused=False)),
    Case("overflow-conv-scalar", "silent wrong numbers", "the same conv, scalar engine",
         overflow_library("scalar", fused=False)),
    Case("overflow-train", "tracebacks", "resume a run whose checkpoint's weights are all 127: fc2 sums 200,000 "
         "products of 96 x 127", overflow_cli),
    Case("lock-second-writer", "lost data", "a second training started into a running one's --out",
         second_writer),
    Case("dask-http", "hangs", "sweep --scheduler at an HTTP server", dask_http),
    Case("dask-silent", "hangs", "sweep --scheduler at a listener that never answers", dask_silent),
    Case("checkpoint-random", "tracebacks", "resume from an int8 checkpoint of random bytes",
         corrupt_checkpoint(lambda b: os.urandom(len(b)))),
    Case("checkpoint-truncated", "tracebacks", "resume from an int8 checkpoint cut in half",
         corrupt_checkpoint(lambda b: b[:len(b) // 2])),
    Case("checkpoint-empty", "tracebacks", "resume from an empty int8 checkpoint", corrupt_checkpoint(lambda b: b"")),
    Case("checkpoint-fp32-garbage", "tracebacks", "resume from a float32 checkpoint of random bytes",
         corrupt_checkpoint(lambda b: os.urandom(len(b)), arith="fp32")),
    Case("out-is-file", "tracebacks", "--out names an existing file", out_is_file),
    Case("out-read-only", "tracebacks", "--out on a read-only file system", out_read_only),
    Case("out-name-300-bytes", "tracebacks", "--out with a 300-byte name", out_name_too_long),
    Case("out-full-disk", "tracebacks", "--out on a 64 KiB file system", out_full_disk),
    Case("config-not-utf8", "tracebacks", "a training config in Latin-1 with a non-ASCII byte",
         config_bytes("model: mlp  # caf\xe9\n".encode("latin-1") + TINY_TRAIN.split("\n", 1)[1].encode())),
    Case("config-nested-5000", "tracebacks", "YAML nested 5,000 deep", config_bytes(b"a: " + b"[" * 5000 + b"]" * 5000)),
    Case("config-alias-bomb", "tracebacks", "a YAML alias bomb: 10^9 leaves in half a kilobyte", config_bytes(alias_bomb())),
    Case("config-duplicate-key", "silently accepted", "a training config with `batch` twice",
         config_bytes((TINY_TRAIN + "batch: 32\n").encode())),
    Case("config-binary", "tracebacks", "a config of 4 KiB of random bytes", config_bytes(os.urandom(4096))),
    Case("accelerator-clock-inf", "tracebacks", "clock_mhz: .inf", accelerator_with("clock_mhz: .inf", "clock_mhz: 500")),
    Case("accelerator-clock-nan", "tracebacks", "clock_mhz: .nan", accelerator_with("clock_mhz: .nan", "clock_mhz: 500")),
    Case("idx-gzip-bomb", "tracebacks", "a 3 MB gzip IDX file that inflates to 3 GB", gzip_bomb),
    Case("data-unreadable", "tracebacks", "a data folder without read permission (run as nobody)", unreadable_data),
    Case("data-empty-string", "silently accepted", '--data ""', empty_data),
    Case("model-linear-1e8", "tracebacks", "Linear with 10^8 outputs",
         big_model("  - flatten\n  - linear: {out: 100000000}\n  - linear: {out: 10}\n")),
    Case("model-conv-1e6-channels", "tracebacks", "a conv with 10^6 channels",
         big_model("  - conv: {out: 1000000, kernel: 3, padding: 1}\n  - flatten\n  - linear: {out: 10}\n")),
    Case("model-10000-layers", "tracebacks", "a model of 10,001 layers (5,001 linear)", deep_model),
    Case("resume-other-data", "silently accepted", "--resume with --data at another data set", resume_other_data),
    Case("resume-torn-metrics", "silently accepted", "--resume after a half-written metrics line",
         resume_torn_metrics),
    Case("resume-stale-temp", "silently accepted", "--resume beside a stale .checkpoint.npz.*.tmp",
         resume_stale_temp),
    Case("resume-fewer-epochs", "silently accepted", "--resume --epochs 1 on a 2-epoch run", resume_fewer_epochs),
    Case("run-bad-accelerator", "silently accepted", "nitisim run with a broken accelerator file",
         run_bad_accelerator),
)


def run_cases(cases: tuple[Case, ...]) -> list[tuple[Case, Outcome]]:
    results = []
    for i, case in enumerate(cases, 1):
        with tempfile.TemporaryDirectory(prefix=f"hostile-{case.name}-") as tmp:
            folder = Path(tmp)
            os.chmod(folder, 0o755)
            t0 = time.monotonic()
            try:
                outcome = case.run(folder)
            except Exception as err:  # the harness's own failure is reported, not hidden
                outcome = Outcome("other", f"harness: {type(err).__name__}: {err}")
        print(f"[{i}/{len(cases)}] {case.name}: {outcome.verdict} ({time.monotonic() - t0:.1f} s) {outcome.detail[:160]}",
              file=sys.stderr, flush=True)
        results.append((case, outcome))
    return results


VERDICTS = ("clean", "handled", "traceback", "silent", "lost", "hang", "other", "not tried")


def table(results: list[tuple[Case, Outcome]]) -> str:
    counts = {v: sum(o.verdict == v for _, o in results) for v in VERDICTS}
    lines = [
        f"{len(results)} hostile inputs tried: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".",
        "",
        "| case | from the report's | input | verdict | what the user sees |",
        "|---|---|---|---|---|",
    ]
    for case, out in results:
        detail = out.detail.replace("|", "\\|")[:220]
        lines.append(f"| {case.name} | {case.group} | {case.what} | {out.verdict} | `{detail}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--skip", action="append", default=[], help="leave out the cases whose name contains this")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/results.md alone")
    args = parser.parse_args(argv)
    cases = tuple(c for c in CASES if (not args.only or args.only in c.name)
                  and not any(s in c.name for s in args.skip))
    results = run_cases(cases)
    text = table(results)
    print(text)
    if not args.no_write and not args.only and not args.skip:
        write_section("hostile-inputs", "Reliability: hostile inputs (benchmarks/hostile_inputs.py)", text)
    bad = sum(o.verdict in ("traceback", "silent", "lost", "hang", "other") for _, o in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
