"""A detected int32 overflow reaches the user as one line naming the graph node, the layer and what
to change, with exit status 2 and no traceback, and leaves the last checkpoint as it was.

The executor (nitisim/contract/executor.py run_graph) turns a kernel's IntegerOverflowError into a
NodeOverflowError naming the node; the CLI prints it as `nitisim: error: integer overflow: ...`.
Every backend names the same node: a fused conv + requantize (the C table) raises at the requantize,
and is charged to the conv that produced the accumulator.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.executor import MAX_INT32_REDUCTION, NodeOverflowError, StepContext, train_step
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import ModelSpec
from nitisim.contract.numerics import QTensor
from nitisim.contract.reference import REFERENCE_KERNELS

HAVE_CC = shutil.which(os.environ.get("CC") or "gcc") is not None
BACKENDS = ["numpy", pytest.param("cpu", marks=pytest.mark.skipif(not HAVE_CC,
                                                                  reason="no C compiler for the cpu backend"))]

# Layer 1 (all weights 127) gives every one of its 300000 outputs the same value per image, and the
# requantize scales the batch's largest to at least 64 in magnitude; layer 2 (all weights 127) then
# sums 300000 products of 127 x (64..127): beyond 2**31 whatever the data.
DEEP_MODEL = """
name: deep-fc
input: [1, 1, 4]
layers:
  - flatten
  - linear: {out: 300000}
  - linear: {out: 10}
"""
CONFIG = """
model: deep-fc.yaml
dataset: synthetic
synthetic: {train: 8, test: 4}
batch: 4
epochs: 2
mu_schedule: [{from_epoch: 0, mu: 2}]
seed: 1
eval_batch: 4
"""
EXPECTED_HINT = ("layer fc2's forward reduction sums 300000 products (its input features), more than the 133144 "
                 "products of 127 x 127 that always fit int32: give layer fc2 at most 133144 input features")


def full_scale_init(monkeypatch):
    """Initial weights all 127 (the trainer's init_params, then every weight mantissa set to 127)."""
    import nitisim.train.integer as integer

    def init(graph, seed=0):
        params = init_params(graph, seed)
        return {k: QTensor(np.full_like(v.m, 127), v.e) if k in graph.weights else v for k, v in params.items()}

    monkeypatch.setattr(integer, "init_params", init)


def write_config(folder: Path, model: str = DEEP_MODEL, config: str = CONFIG) -> Path:
    (folder / "deep-fc.yaml").write_text(model)
    path = folder / "deep-fc-train.yaml"
    path.write_text(config)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_reports_an_overflowing_model_in_one_line(tmp_path, capsys, monkeypatch, backend):
    """A model whose second layer really overflows int32 (no kernel patched): exit 2, one line."""
    full_scale_init(monkeypatch)
    cfg = write_config(tmp_path)
    status = main(["train", str(cfg), "--backend", backend, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("nitisim: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("nitisim: error: integer overflow: graph node fc2.fwd (linear, layer fc2): "), line
    assert "int32 accumulator overflow" in line and line.endswith(EXPECTED_HINT), line
    assert not (tmp_path / "run" / "checkpoint.npz").exists()  # no step finished: nothing to keep


def test_overflow_in_epoch_two_keeps_epoch_one(tmp_path, capsys, monkeypatch):
    """An overflow at the first step of epoch 2 (a kernel made to raise there): epoch 1's
    checkpoint.npz is byte for byte the one written at the end of epoch 1, and metrics.jsonl holds
    exactly the epoch-1 line."""
    import nitisim.backends as train_backends

    steps_per_epoch = 2  # 8 images, batch 4
    real_linear = REFERENCE_KERNELS["linear"]

    def linear(node, ctx, x, w):
        if ctx.step >= steps_per_epoch and node.name == "fc2.fwd":
            raise IntegerOverflowError(f"{node.name}: int32 accumulator overflow (range 0..2147483648)")
        return real_linear(node, ctx, x, w)

    table = dict(REFERENCE_KERNELS, linear=linear)
    monkeypatch.setattr(train_backends, "_numpy_table", lambda: table)
    model = DEEP_MODEL.replace("300000", "16")
    one_epoch = write_config(tmp_path, model, CONFIG.replace("epochs: 2", "epochs: 1"))
    run = tmp_path / "run"
    assert main(["train", str(one_epoch), "--backend", "numpy", "--out", str(run)]) == 0
    checkpoint = (run / "checkpoint.npz").read_bytes()
    metrics = (run / "metrics.jsonl").read_text()
    assert [json.loads(s)["epoch"] for s in metrics.splitlines()] == [0]
    capsys.readouterr()

    # the same run for 2 epochs, resumed from epoch 1's checkpoint: fails at its first step
    two_epochs = write_config(tmp_path, model, CONFIG)
    status = main(["train", str(two_epochs), "--backend", "numpy", "--out", str(run), "--resume", "--epochs", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("nitisim: error:")] == [
        "nitisim: error: integer overflow: graph node fc2.fwd (linear, layer fc2): int32 accumulator overflow "
        "(range 0..2147483648)"]  # 16 input features cannot overflow: no reduction hint
    assert (run / "checkpoint.npz").read_bytes() == checkpoint
    assert (run / "metrics.jsonl").read_text() == metrics


def test_overflow_during_a_fresh_two_epoch_run_keeps_epoch_one(tmp_path, capsys, monkeypatch):
    """Without --resume: the run writes epoch 1's metrics line and checkpoint, then an overflow
    stops it at the second step of epoch 2. Both files stay byte for byte as they were when the
    overflow was raised, and the checkpoint holds the weights of the same run stopped after epoch 1."""
    import nitisim.backends as train_backends

    real_linear = REFERENCE_KERNELS["linear"]
    fail_at = {"step": 10**9}
    snapshot: dict[str, bytes] = {}

    def linear(node, ctx, x, w):
        if ctx.step >= fail_at["step"]:
            for name in ("checkpoint.npz", "metrics.jsonl"):
                snapshot[name] = (failing_run / name).read_bytes()
            raise IntegerOverflowError(f"{node.name}: int32 accumulator overflow (range 0..2147483648)")
        return real_linear(node, ctx, x, w)

    monkeypatch.setattr(train_backends, "_numpy_table", lambda: dict(REFERENCE_KERNELS, linear=linear))
    reference_run, failing_run = tmp_path / "one", tmp_path / "two"
    cfg = write_config(tmp_path, DEEP_MODEL.replace("300000", "16"), CONFIG)
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(reference_run), "--epochs", "1"]) == 0
    fail_at["step"] = 3  # steps 0, 1: epoch 1; steps 2, 3: epoch 2
    capsys.readouterr()
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(failing_run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("nitisim: error:")] == [
        "nitisim: error: integer overflow: graph node fc1.fwd (linear, layer fc1): int32 accumulator overflow "
        "(range 0..2147483648)"]  # 4 input features cannot overflow: no reduction hint
    assert (failing_run / "checkpoint.npz").read_bytes() == snapshot["checkpoint.npz"]
    assert (failing_run / "metrics.jsonl").read_bytes() == snapshot["metrics.jsonl"]
    lines = (failing_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [0]
    want = json.loads((reference_run / "metrics.jsonl").read_text())
    for key in ("train_accuracy", "test_accuracy"):  # the timing fields differ between runs
        assert json.loads(lines[0])[key] == want[key]
    with np.load(failing_run / "checkpoint.npz") as got, np.load(reference_run / "checkpoint.npz") as ref:
        assert set(got.files) == set(ref.files)
        for k in ref.files:
            if k != "meta" and not k.startswith("meta"):
                np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


# ------------------------------------------------------------------------------ executor, per backend
def conv_model(channels: int) -> ModelSpec:
    from nitisim.contract.models import parse_model

    return parse_model({"name": "wide-conv", "input": [1, 1, channels], "classes": 10,
                        # 3 outputs: the fused C conv runs by slices of images (weights < 512 KB)
                        "layers": [{"conv": {"out": 3, "kernel": 1}}, "flatten", {"linear": {"out": 10}}]}, "test")


def kernel_tables():
    tables = [("numpy", REFERENCE_KERNELS)]
    if HAVE_CC:
        from gpu_backend.backends import cpu_kernel_table
        from gpu_backend.lib import available_engines

        for engine in available_engines():
            for fused in (True, False):
                tables.append((f"cpu {engine} {'fused' if fused else 'unfused'}",
                               cpu_kernel_table(engine=engine, fuse_requantize=fused)))
    return tables


def test_train_step_names_the_conv_on_every_backend():
    """The reported case: a 1x1 conv over 140000 channels of 127 x 127 in a whole train_step. Every
    backend (numpy, each CPU engine, fused and not) raises NodeOverflowError at conv1.fwd with the
    same hint; the C ones restore the engine choice afterwards."""
    graph = build_graph(conv_model(140_000), 1, NumericsOptions(), training=True)
    params = {k: QTensor(np.full_like(v.m, 127), v.e) if k in graph.weights else v
              for k, v in init_params(graph, 0).items()}
    x = QTensor(np.full((1, 1, 1, 140_000), 127, np.int8), -8)
    hint = ("layer conv1's forward reduction sums 140000 products (kernel 1x1 x 140000 input channels), more than "
            "the 133144 products of 127 x 127 that always fit int32: give layer conv1 a smaller kernel or fewer "
            "input channels (kernel height x width x input channels at most 133144)")
    seen = []
    try:
        for name, table in kernel_tables():
            with pytest.raises(NodeOverflowError) as info:
                train_step(graph, table, params, x, np.array([3], np.int32), StepContext(mu=2))
            err = info.value
            assert (err.node, err.layer) == ("conv1.fwd", "conv1"), name
            text = str(err)
            assert text.startswith("graph node conv1.fwd (conv2d, layer conv1): "), (name, text)
            assert "int32 accumulator overflow" in text and "..2258060000)" in text, (name, text)
            assert text.endswith(hint), (name, text)
            assert "\n" not in text
            seen.append(name)
    finally:
        if HAVE_CC:
            from gpu_backend.lib import cpu_library

            cpu_library().set_engine("auto")
    assert "numpy" in seen and (not HAVE_CC or any(s.startswith("cpu avx2") for s in seen)), seen


def test_train_step_at_the_bound_is_exact():
    """133144 channels of 127 x 127 is the longest reduction that always fits: no error, and the
    cpu backend's step equals numpy's bit for bit."""
    graph = build_graph(conv_model(MAX_INT32_REDUCTION), 1, NumericsOptions(), training=True)
    params = {k: QTensor(np.full_like(v.m, 127), v.e) if k in graph.weights else v
              for k, v in init_params(graph, 0).items()}
    x = QTensor(np.full((1, 1, 1, MAX_INT32_REDUCTION), 127, np.int8), -8)
    keep = ("conv1.acc",)
    results = {name: train_step(graph, table, params, x, np.array([3], np.int32), StepContext(mu=2), keep=keep)
               for name, table in kernel_tables()}
    want = results.pop("numpy")
    assert np.asarray(want.tensors["conv1.acc"].m).max() == 127 * 127 * MAX_INT32_REDUCTION
    for name, got in results.items():
        np.testing.assert_array_equal(np.asarray(got.tensors["conv1.acc"].m), want.tensors["conv1.acc"].m, name)
        for k in want.params:
            np.testing.assert_array_equal(got.params[k].m, want.params[k].m, f"{name} {k}")


def test_hint_names_the_reduction_of_each_gemm_op():
    """The input-gradient and weight-gradient hints, from the node's shapes (no kernel run)."""
    from nitisim.contract.executor import _overflow_hint

    graph = build_graph(parse_two_conv(), 2, NumericsOptions(), training=True)
    nodes = {n.name: n for n in graph.nodes}
    assert _overflow_hint(graph, nodes["conv2.in_grad"]) == (
        "layer conv2's input-gradient reduction sums 135000 products (kernel 3x3 x 15000 output channels), more "
        "than the 133144 products of 127 x 127 that always fit int32: give layer conv2 a smaller kernel or fewer "
        "output channels (kernel height x width x output channels at most 133144)")
    assert _overflow_hint(graph, nodes["conv1.fwd"]) == ""  # 3 x 3 x 1 products cannot overflow
    assert _overflow_hint(graph, nodes["conv1.w_grad"]) == ""
    assert "smaller mu" in _overflow_hint(graph, nodes["conv1.update"])


def parse_two_conv() -> ModelSpec:
    from nitisim.contract.models import parse_model

    return parse_model({"name": "two-conv", "input": [3, 3, 1], "classes": 10,
                        "layers": [{"conv": {"out": 4, "kernel": 3, "padding": 1}},
                                   {"conv": {"out": 15000, "kernel": 3, "padding": 1}}, "flatten",
                                   {"linear": {"out": 10}}]}, "test")
