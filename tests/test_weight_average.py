"""Weight averaging over the last epochs (`average_epochs`): the integer mean, its place in the
run's metrics and summary, its checkpoint round trip and resume, and the float32 twin's."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nitisim.cli import main
from nitisim.contract.numerics import QTensor
from nitisim.train.averaging import IntegerWeightAverage, round_div
from nitisim.train.config import load_config
from nitisim.train.fp32 import Fp32Trainer

from test_train_run import SYNTHETIC, TINY_CONFIG, TINY_MODEL


def _nearest(x: np.ndarray, d: int) -> np.ndarray:
    """Round half away from zero, in float64 (exact for these magnitudes)."""
    q = x.astype(np.float64) / d
    return (np.sign(q) * np.floor(np.abs(q) + 0.5)).astype(np.int64)


def test_round_div_is_nearest_half_away():
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << 30), 1 << 30, 20000)
    for d in (1, 2, 3, 7, 8, 256, 3 * 256, 40 * 256):
        assert np.array_equal(round_div(x, d), _nearest(x, d)), d
    halves = np.array([-3, -1, 1, 3]) * 128  # exactly half of 256 times odd: ties
    assert round_div(halves, 256).tolist() == [-2, -1, 1, 2]


@pytest.mark.parametrize("shadowed", [False, True])
def test_integer_average_is_the_rounded_mean(shadowed):
    rng = np.random.default_rng(1)
    avg = IntegerWeightAverage(("w1", "w2"), shadowed)
    shapes = {"w1": (4, 3, 3, 2), "w2": (10, 8)}
    snaps = []
    for _ in range(5):
        params = {}
        for w, shape in shapes.items():
            params[w] = QTensor(rng.integers(-127, 128, shape).astype(np.int8), -7)
            if shadowed:
                params[f"{w}.shadow"] = QTensor(rng.integers(-127 * 256, 127 * 256 + 1, shape).astype(np.int16), -15)
        avg.add(params)
        snaps.append(params)
    out = avg.averaged(snaps[-1])
    for w in shapes:
        src = f"{w}.shadow" if shadowed else w
        total = sum(s[src].m.astype(np.int64) for s in snaps)
        expected = np.clip(_nearest(total, 5 * (256 if shadowed else 1)), -127, 127)
        assert out[w].m.dtype == np.int8 and out[w].e == -7
        assert np.array_equal(out[w].m, expected)
        if shadowed:
            assert out[f"{w}.shadow"] is snaps[-1][f"{w}.shadow"]  # only the weights are replaced


def test_average_of_one_identical_snapshot_is_the_weight():
    w = QTensor(np.arange(-127, 128, dtype=np.int8), -6)
    avg = IntegerWeightAverage(("w",), False)
    avg.add({"w": w})
    avg.add({"w": w})
    assert np.array_equal(avg.averaged({"w": w})["w"].m, w.m)


def _config(tmp_path: Path, epochs: int, average: int, rule: str = "shadow16") -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_MODEL)
    path = tmp_path / "tiny-avg.yaml"
    path.write_text(TINY_CONFIG.replace("update_rule: momentum", f"update_rule: {rule}")
                    .replace("epochs: 2", f"epochs: {epochs}") + f"average_epochs: {average}\n")
    return path


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_run_sums_the_window_epochs_and_reports_the_average(tmp_path):
    averaged = tmp_path / "averaged"
    cfg = _config(tmp_path, epochs=3, average=2)
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(averaged)]) == 0
    lines = _metrics(averaged)
    assert ["averaged_test_accuracy" in m for m in lines] == [False, True, True]
    summary = json.loads((averaged / "summary.json").read_text())
    assert summary["final_test_accuracy"] == lines[-1]["averaged_test_accuracy"]
    assert summary["final_unaveraged_test_accuracy"] == lines[-1]["test_accuracy"]
    # the same run without averaging (same step hash: averaging never writes a weight), stopped
    # after each window epoch, gives the shadows the sums must hold
    plain = tmp_path / "plain"
    no_avg = tmp_path / "no-avg.yaml"
    no_avg.write_text(cfg.read_text().replace("average_epochs: 2", "average_epochs: 0"))
    shadows = []
    for epochs in (2, 3):
        args = ["train", str(no_avg), "--backend", "numpy", "--out", str(plain), "--epochs", str(epochs)]
        assert main(args + (["--resume"] if epochs == 3 else [])) == 0
        shadows.append(_arrays(plain))
    ckpt = _arrays(averaged)
    assert json.loads(str(ckpt["meta"]))["average_count"] == 2
    sums = [k for k in ckpt if k.startswith("m/average/")]
    assert sums
    for key in sums:
        weight = key[len("m/average/"):]
        expected = sum(s[f"m/{weight}.shadow"].astype(np.int64) for s in shadows)
        assert np.array_equal(ckpt[key], expected), weight
    for key in shadows[-1]:
        if key != "meta":
            assert np.array_equal(ckpt[key], shadows[-1][key]), key  # the live weights are untouched


def test_resume_inside_the_window_is_bit_exact(tmp_path):
    cfg = _config(tmp_path, epochs=3, average=3, rule="plain")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(straight)]) == 0
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(resumed), "--epochs", "2"]) == 0
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(resumed), "--resume"]) == 0
    a, b = _arrays(straight), _arrays(resumed)
    assert sorted(a) == sorted(b) and any(k.startswith("m/average/") for k in a)
    for key in a:
        if key != "meta":
            assert np.array_equal(a[key], b[key]), key
    assert _metrics(straight) == [dict(m, seconds=s["seconds"], eval_seconds=s["eval_seconds"],
                                       images_per_second=s["images_per_second"])
                                  for m, s in zip(_metrics(resumed), _metrics(straight))]


def test_resume_with_a_mismatched_average_is_one_line(tmp_path, capsys):
    cfg = _config(tmp_path, epochs=3, average=2, rule="plain")
    out = tmp_path / "run"
    # --epochs 2 puts both epochs in the window (2 summed); epoch 3 of 3 needs just 1 before it
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(out), "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "--backend", "numpy", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "average_epochs" in err[0] and str(cfg) in err[0]


def test_config_bounds(tmp_path):
    with pytest.raises(Exception, match="average_epochs"):
        load_config(_config(tmp_path, epochs=3, average=4))
    assert load_config(_config(tmp_path, epochs=3, average=3)).average_from_epoch == 0
    c = load_config(_config(tmp_path, epochs=3, average=1))
    assert c.average_from_epoch == 2 and c.step_hash("int8") == load_config(
        _config(tmp_path, epochs=3, average=0)).step_hash("int8")


def test_fp32_twin_averages_its_weights(tmp_path):
    path = tmp_path / "fp32-avg.yaml"
    path.write_text(SYNTHETIC.read_text().replace("epochs: 2", "epochs: 2\naverage_epochs: 2"))
    trainer = Fp32Trainer(load_config(path), "cpu", threads=1)
    first = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.add_to_average()
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    trainer.add_to_average()
    mean = trainer.average.model()
    for name, p in mean.named_parameters():
        assert torch.allclose(p, first[name] + 0.5, atol=1e-6), name
    out = tmp_path / "run"
    assert main(["train", str(path), "--arith", "fp32", "--out", str(out), "--epochs", "1"]) == 0
    assert main(["train", str(path), "--arith", "fp32", "--out", str(out), "--resume"]) == 0
    lines = _metrics(out)
    summary = json.loads((out / "summary.json").read_text())
    assert all("averaged_test_accuracy" in m for m in lines)
    assert summary["final_test_accuracy"] == lines[-1]["averaged_test_accuracy"]
