"""`nitisim train` end to end on tiny synthetic data: files, resume, learning, fp32, --data, errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.datasets import synthetic_dataset
from nitisim.datasets.idx import write_idx_folder
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.train.config import load_config
from nitisim.train.data import load_for_config
from nitisim.train.integer import IntegerTrainer

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"

# A small conv net exercising every op and the stateful update rule: conv, pool, dropout (hash
# masks), stochastic rounding (hash draws), momentum (optimiser state in the checkpoint).
TINY_MODEL = """
name: tiny-cnn
input: [28, 28, 1]
layers:
  - conv: {out: 4, kernel: 5, stride: 2}
  - relu
  - maxpool: {kernel: 2, stride: 2}
  - flatten
  - dropout: {rate: 0.5}
  - linear: {out: 10}
"""
TINY_CONFIG = """
model: tiny.yaml
dataset: synthetic
synthetic: {train: 96, test: 50}
batch: 32
epochs: 2
mu_schedule: [{from_epoch: 0, mu: 3}, {from_epoch: 1, mu: 2}]
activation_rounding: stochastic
error_rounding: stochastic
loss_variant: fine
update_rule: momentum
seed: 7
eval_batch: 16
"""


@pytest.fixture
def tiny_config(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_MODEL)
    path = tmp_path / "tiny-cnn.yaml"
    path.write_text(TINY_CONFIG)
    return path


def _checkpoint(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("update_rule", ["momentum", "shadow16"])
def test_resume_is_bit_exact(tmp_path, tiny_config, update_rule):
    tiny_config.write_text(TINY_CONFIG.replace("update_rule: momentum", f"update_rule: {update_rule}"))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", str(tiny_config), "--backend", "numpy", "--out", str(straight)]) == 0
    assert main(["train", str(tiny_config), "--backend", "numpy", "--out", str(resumed), "--epochs", "1"]) == 0
    one_epoch = _checkpoint(resumed)
    assert main(["train", str(tiny_config), "--backend", "numpy", "--out", str(resumed), "--resume"]) == 0
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert sorted(a) == sorted(b) and any(k.endswith((".velocity", ".shadow")) for k in a)
    for key in a:
        if key != "meta":
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert any(not np.array_equal(one_epoch[k], a[k]) for k in a if k.startswith("m/"))  # epoch 2 did train
    assert json.loads(str(a["meta"]))["step"] == json.loads(str(b["meta"]))["step"] == 6
    ma, mb = _metrics(straight), _metrics(resumed)
    assert [m["epoch"] for m in mb] == [0, 1]
    assert [(m["train_accuracy"], m["test_accuracy"], m["mu"]) for m in ma] == \
           [(m["train_accuracy"], m["test_accuracy"], m["mu"]) for m in mb]
    timing = json.loads((resumed / "timing.json").read_text())
    assert timing["steps"] == 6 and timing["nodes"]["conv1.fwd"]["calls"] == 6  # totals continue over a resume


def test_run_files(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(SYNTHETIC), "--backend", "numpy", "--out", str(out)]) == 0
    lines = _metrics(out)
    assert len(lines) == 2
    for line in lines:
        assert {"epoch", "train_accuracy", "test_accuracy", "seconds", "images_per_second", "mu", "arith",
                "backend"} <= set(line)
        assert line["arith"] == "int8" and line["backend"] == "numpy" and line["mu"] == 2
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "final_test_accuracy", "best_test_accuracy", "total_seconds", "images_per_second",
                "backend", "arith", "macs_per_step"):
        assert summary[key] is not None, key
    assert summary["config"]["model"] == "mlp" and summary["config"]["batch"] == 64
    assert summary["macs_per_step"] == 3 * 64 * (784 * 256 + 256 * 128 + 128 * 10) - 64 * 784 * 256  # no input grad
    timing = json.loads((out / "timing.json").read_text())
    node = timing["nodes"]["fc1.fwd"]
    assert node == {"op": "linear", "layer": "fc1", "phase": "forward", "seconds": node["seconds"], "calls": 16,
                    "median_seconds": node["median_seconds"], "quartile_seconds": node["quartile_seconds"]}
    assert 0 < node["quartile_seconds"] <= node["median_seconds"] <= node["seconds"]  # within the 16 calls' sum
    assert {n["phase"] for n in timing["nodes"].values()} == {"forward", "loss", "backward", "update"}
    assert not list(out.glob(".*.tmp"))  # no temp files left by the atomic writes


def test_integer_training_beats_chance():
    cfg = load_config(SYNTHETIC).with_epochs(1)
    ds = load_for_config(cfg, None)
    trainer = IntegerTrainer(cfg, REFERENCE_KERNELS, "numpy")
    before = trainer.evaluate(ds.test_images, ds.test_labels) / len(ds.test_labels)
    for step in range(6):  # six steps of 64 images
        idx = np.arange(step * 64, (step + 1) * 64)
        trainer.train_batch(ds.train_images[idx], ds.train_labels[idx], 0, step)
    after = trainer.evaluate(ds.test_images, ds.test_labels) / len(ds.test_labels)
    assert after > 0.6 and after > before + 0.3  # chance is 0.1


def test_evaluation_counts_the_remainder():
    cfg = load_config(SYNTHETIC)
    ds = load_for_config(cfg, None)
    trainer = IntegerTrainer(cfg, REFERENCE_KERNELS, "numpy")
    idx = np.arange(64)
    trainer.train_batch(ds.train_images[idx], ds.train_labels[idx], 0, 0)
    # PSR activations are deterministic, so slicing (100 + 100 + 56 vs one 256 batch) changes nothing
    whole = trainer.evaluate(ds.test_images, ds.test_labels)
    import dataclasses

    trainer.cfg = dataclasses.replace(cfg, eval_batch=256)
    assert trainer.evaluate(ds.test_images, ds.test_labels) == whole
    trainer.cfg = dataclasses.replace(cfg, eval_batch=1000)
    assert trainer.evaluate(ds.test_images, ds.test_labels) == whole


def test_resume_with_other_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(SYNTHETIC), "--backend", "numpy", "--out", str(out), "--epochs", "1"]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(SYNTHETIC.read_text().replace("mu: 2", "mu: 3"))
    capsys.readouterr()
    assert main(["train", str(other), "--backend", "numpy", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other.yaml" in err and "checkpoint" in err


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", str(SYNTHETIC), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_missing_dataset_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text("model: lenet\ndataset: mnist\nbatch: 8\nepochs: 1\nmu_schedule: [{from_epoch: 0, mu: 1}]\n")
    assert main(["train", str(cfg), "--data", str(tmp_path / "no-such-folder")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-folder" in err and "Traceback" not in err


def test_data_path_mnist_format(tmp_path, capsys):
    ds = synthetic_dataset(128, 40, (28, 28, 1), 10, seed=3)
    folder = write_idx_folder(tmp_path / "my-mnist", ds.train_images, ds.train_labels, ds.test_images,
                              ds.test_labels)
    cfg = tmp_path / "mnist-mlp.yaml"
    cfg.write_text("model: mlp\ndataset: mnist\nbatch: 32\nepochs: 2\nmu_schedule: [{from_epoch: 0, mu: 2}]\n"
                   "eval_batch: 64\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(folder), "--backend", "numpy", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset_source"] == str(folder) and summary["train_images"] == 128
    assert summary["test_images"] == 40 and summary["final_test_accuracy"] > 0.5
    assert "test" in capsys.readouterr().err  # the per-epoch report line


def test_wrong_input_shape_for_dataset(tmp_path, capsys):
    ds = synthetic_dataset(64, 10, (28, 28, 1), 10, seed=3)
    folder = write_idx_folder(tmp_path / "mnist", ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vgg-small-7\ndataset: mnist\nbatch: 8\nepochs: 1\nmu_schedule: [{from_epoch: 0, mu: 1}]\n")
    assert main(["train", str(cfg), "--data", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml: model:" in err and "32x32x3" in err and "28x28x1" in err


def test_fp32_trains_above_chance(tmp_path):
    out = tmp_path / "fp32"
    assert main(["train", str(SYNTHETIC), "--arith", "fp32", "--out", str(out)]) == 0
    lines = _metrics(out)
    assert lines[-1]["test_accuracy"] > 0.5 and lines[-1]["arith"] == "fp32"
    assert lines[0]["backend"] == "torch-cpu" and lines[0]["lr"] == 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arith"] == "fp32" and summary["macs_per_step"] > 0
    assert (out / "checkpoint.pt").exists()
    # resume continues from the torch checkpoint
    assert main(["train", str(SYNTHETIC), "--arith", "fp32", "--out", str(out), "--resume", "--epochs", "3"]) == 0
    assert [m["epoch"] for m in _metrics(out)] == [0, 1, 2]


def test_fp32_network_matches_integer_layout():
    """Flatten order: the torch net, fed NHWC and holding the integer graph's weights, sees the same features."""
    import torch

    from nitisim.contract.models import builtin_models
    from nitisim.train.fp32 import SpecNet

    spec = builtin_models()["lenet"]
    net = SpecNet(spec)
    x = torch.randn(2, 28, 28, 1)
    feats = net.body[:7](x.permute(0, 3, 1, 2))  # (2, 800) after Flatten
    conv = net.body[:6](x.permute(0, 3, 1, 2))  # (2, 50, 4, 4) NCHW
    assert torch.equal(feats, conv.permute(0, 2, 3, 1).reshape(2, -1))
    assert net.body[7].weight.shape == (500, 800) and net.body[7].bias is None


def test_integer_path_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from nitisim.cli import main\n"
        f"assert main(['train', {str(SYNTHETIC)!r}, '--backend', 'numpy', '--epochs', '1', "
        f"'--out', {str(tmp_path / 'r')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


def test_seed_flag_overrides_the_config_seed(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(SYNTHETIC), "--backend", "numpy", "--epochs", "1", "--out", str(a), "--seed", "5"]) == 0
    assert main(["train", str(SYNTHETIC), "--backend", "numpy", "--epochs", "1", "--out", str(b)]) == 0
    sa, sb = (json.loads((f / "summary.json").read_text()) for f in (a, b))
    assert sa["config"]["seed"] == 5 and sb["config"]["seed"] == load_config(SYNTHETIC).seed != 5
    assert not np.array_equal(_checkpoint(a)["m/fc1.w"], _checkpoint(b)["m/fc1.w"])
    assert main(["train", str(SYNTHETIC), "--out", str(tmp_path / "c"), "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
