"""The `validation` option: the last V training images held out, never trained on, evaluated every epoch.

Without it a run is what it was before the option existed: the same data, step hash and files.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.train import data as train_data
from nitisim.train import loop as train_loop
from nitisim.train.config import load_config
from nitisim.train.data import load_for_config, split_validation
from nitisim.train.integer import IntegerTrainer
from nitisim.train.loop import run_training
from nitisim.train.progress import Progress
from nitisim.train.runfiles import RunFolder

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "train"
BASE = """
model: mlp
dataset: synthetic
synthetic: {train: 320, test: 100}
batch: 32
epochs: 2
mu_schedule:
  - {from_epoch: 0, mu: 2}
seed: 1
eval_batch: 48
"""
HELD = 64


def _cfg(tmp_path, extra="", name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(BASE + extra)
    return load_config(path)


def _error(tmp_path, extra) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        _cfg(tmp_path, extra)
    return info.value


def test_validation_defaults_to_none_and_parses(tmp_path):
    assert _cfg(tmp_path).validation == 0
    assert _cfg(tmp_path, f"validation: {HELD}\n").validation == HELD
    assert _cfg(tmp_path, "validation: 0\n").validation == 0


@pytest.mark.parametrize("value, problem", [("-1", "at least 0"), ("2.5", "integer"), ("many", "integer")])
def test_bad_validation_names_file_and_field(tmp_path, value, problem):
    err = _error(tmp_path, f"validation: {value}\n")
    assert err.source.endswith("cfg.yaml") and err.field == "validation" and problem in err.message


def test_validation_leaving_no_batch_is_refused_at_parse(tmp_path, capsys):
    err = _error(tmp_path, "validation: 300\n")  # 320 - 300 = 20 images, less than a batch of 32
    assert err.field == "validation" and "leaves 20, no batch of 32" in err.message
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "validation: 320\n")
    assert main(["train", str(path), "--backend", "numpy", "--out", str(tmp_path / "r")]) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert "bad.yaml" in line and "validation" in line


def test_split_of_a_loaded_data_set_names_the_field(tmp_path):
    """Data sets read from disk are sized only once loaded: the split checks them there."""
    cfg = _cfg(tmp_path)
    big = dataclasses.replace(cfg, validation=310)  # as if the parse-time check could not know the size
    with pytest.raises(UserInputError) as info:
        load_for_config(big, None)
    assert info.value.field == "validation" and "leaves 10, no batch of 32" in info.value.message


def test_hash_and_echo_unchanged_without_validation(tmp_path):
    off, zero = _cfg(tmp_path), _cfg(tmp_path, "validation: 0\n", "zero.yaml")
    on = _cfg(tmp_path, f"validation: {HELD}\n", "on.yaml")
    assert "validation" not in off.to_dict() and off.to_dict() == zero.to_dict()
    assert off.step_hash("int8") == zero.step_hash("int8")
    assert on.to_dict()["validation"] == HELD
    for arith in ("int8", "fp32"):  # another training set: a resume across the change is refused
        assert on.step_hash(arith) != off.step_hash(arith)


def test_shipped_config_hash_is_the_one_before_the_option():
    """synthetic-mlp.yaml's step hashes as the tree before `validation` existed computed them, so every
    existing run folder still resumes."""
    cfg = load_config(CONFIGS / "synthetic-mlp.yaml")
    assert (cfg.step_hash("int8"), cfg.step_hash("fp32")) == ("5d892f369f4f7a49", "037d1e90cbbd8db4")


def test_last_images_are_held_out_and_subset_takes_the_rest(tmp_path):
    full = load_for_config(_cfg(tmp_path), None)
    ds = load_for_config(_cfg(tmp_path, f"validation: {HELD}\n", "v.yaml"), None)
    keep = 320 - HELD
    assert np.array_equal(ds.train_images, full.train_images[:keep])
    assert np.array_equal(ds.train_labels, full.train_labels[:keep])
    assert np.array_equal(ds.validation_images, full.train_images[keep:])
    assert np.array_equal(ds.validation_labels, full.train_labels[keep:])
    assert np.array_equal(ds.test_images, full.test_images)
    assert ds.fingerprint == full.fingerprint  # cut from the same data set, which a resume checks
    assert full.validation_images is None and full.validation_labels is None
    sub = load_for_config(_cfg(tmp_path, f"validation: {HELD}\ntrain_subset: 100\n", "s.yaml"), None)
    assert np.array_equal(sub.train_images, full.train_images[:100])
    assert np.array_equal(sub.validation_images, full.train_images[keep:])  # the subset never shrinks validation


def test_subset_beyond_what_validation_leaves_is_refused(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_for_config(_cfg(tmp_path, f"validation: {HELD}\ntrain_subset: 300\n"), None)
    assert info.value.field == "train_subset"
    assert info.value.message == (f"300 images asked for, synthetic has {320 - HELD} once {HELD} are held out "
                                  "for validation")


def test_split_is_the_same_for_every_seed():
    """The held-out rows are positions, not a draw: seeds change nothing about which rows they are."""
    base = load_config(CONFIGS / "synthetic-mlp.yaml")
    for seed in (0, 1, 7):
        cfg = dataclasses.replace(base, validation=100, seed=seed)
        full = load_for_config(dataclasses.replace(cfg, validation=0), None)
        ds = split_validation(full, cfg)
        assert np.array_equal(ds.validation_images, full.train_images[-100:])


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_held_out_images_are_never_trained_on(tmp_path, monkeypatch, augment):
    """Every image a training step sees is one of the kept rows, and none is held out: the batch order
    spans only the kept rows, and (without augmentation) each trained image is byte-for-byte a kept row."""
    extra = f"validation: {HELD}\n" + ("augment: crop_flip\ncrop_pad: 2\n" if augment != "none" else "")
    cfg = _cfg(tmp_path, extra)
    ds = load_for_config(cfg, None)
    kept = {row.tobytes() for row in ds.train_images}
    held = {row.tobytes() for row in ds.validation_images}
    assert len(kept) == 320 - HELD and len(held) == HELD and not kept & held  # distinct rows, so bytes identify them
    orders, trained = [], []
    real_order, real_batches = train_data.batch_order, train_loop.epoch_batches

    def order(n, epoch, seed):
        orders.append(n)
        return real_order(n, epoch, seed)

    def batches(ds_, cfg_, epoch):
        for step, images, labels in real_batches(ds_, cfg_, epoch):
            trained.extend(row.tobytes() for row in images)
            yield step, images, labels

    monkeypatch.setattr(train_data, "batch_order", order)
    monkeypatch.setattr(train_loop, "epoch_batches", batches)
    run = RunFolder(tmp_path / "run", "int8")
    run_training(cfg, IntegerTrainer(cfg, REFERENCE_KERNELS, "numpy"), ds, run, progress=Progress(enabled=False))
    assert orders == [320 - HELD] * cfg.epochs
    assert len(trained) == cfg.epochs * ((320 - HELD) // 32) * 32
    if augment == "none":
        assert set(trained) <= kept
        assert not set(trained) & held
        assert len(set(trained)) >= (320 - HELD) // 32 * 32  # a whole epoch of distinct kept rows


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arith", ["int8", "fp32"])
def test_metrics_summary_and_progress_carry_validation(tmp_path, capsys, arith):
    path = tmp_path / "v.yaml"
    path.write_text(BASE + f"validation: {HELD}\n")
    out = tmp_path / f"run-{arith}"
    engine = ["--backend", "numpy"] if arith == "int8" else ["--arith", "fp32", "--device", "cpu"]
    assert main(["train", str(path), *engine, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"({320 - HELD} train / {HELD} validation / 100 test)" in err
    lines = _metrics(out)
    assert len(lines) == 2
    for line, text in zip(lines, [s for s in err.splitlines() if s.startswith("epoch ")]):
        assert list(line)[:4] == ["epoch", "train_accuracy", "validation_accuracy", "test_accuracy"]
        assert line["validation_accuracy"] * HELD == round(line["validation_accuracy"] * HELD)  # a count of 64
        assert f" val {line['validation_accuracy']:.4f} test {line['test_accuracy']:.4f} " in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation_images"] == HELD and summary["train_images"] == 320 - HELD
    assert summary["final_validation_accuracy"] == lines[-1]["validation_accuracy"]
    assert f"validation accuracy final {summary['final_validation_accuracy']:.4f}" in err
    if arith == "int8":  # the number is the trained weights' accuracy on exactly the held-out rows
        cfg = load_config(path)
        trainer = IntegerTrainer(cfg, REFERENCE_KERNELS, "numpy")
        trainer.load(out / "checkpoint.npz")
        ds = load_for_config(cfg, None)
        correct = trainer.evaluate(ds.validation_images, ds.validation_labels)
        assert correct / HELD == summary["final_validation_accuracy"]


def test_averaging_reports_the_averaged_validation_accuracy(tmp_path, capsys):
    path = tmp_path / "v.yaml"
    path.write_text(BASE + f"validation: {HELD}\naverage_epochs: 2\n")
    assert main(["train", str(path), "--backend", "numpy", "--out", str(tmp_path / "r")]) == 0
    assert "averaged val " in capsys.readouterr().err
    last = _metrics(tmp_path / "r")[-1]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_validation_accuracy"] == last["averaged_validation_accuracy"]


def test_without_validation_nothing_new_is_written(tmp_path, capsys):
    path = tmp_path / "plain.yaml"
    path.write_text(BASE)
    assert main(["train", str(path), "--backend", "numpy", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.replace(str(tmp_path), "TMP")  # the folder's name holds this test's name
    assert " val " not in err and "validation" not in err and "(320 train / 100 test)" in err
    assert all("validation" not in key for line in _metrics(tmp_path / "r") for key in line)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert not [key for key in (*summary, *summary["config"]) if "validation" in key]


def test_report_shows_validation_beside_test(tmp_path, capsys):
    path = tmp_path / "v.yaml"
    path.write_text(BASE + f"validation: {HELD}\n")
    assert main(["train", str(path), "--backend", "numpy", "--out", str(tmp_path / "v-int8")]) == 0
    assert main(["train", str(path), "--arith", "fp32", "--device", "cpu", "--out", str(tmp_path / "v-fp32")]) == 0
    assert main(["compare", str(tmp_path / "v-int8"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    doc = json.loads((tmp_path / "report" / "compare.json").read_text())
    for arith, run in (("int8", doc["run"]), ("fp32", doc["fp32_twin"])):
        summary = json.loads((tmp_path / f"v-{arith}" / "summary.json").read_text())
        val, test = (f"{100 * summary[k]:.2f}" for k in ("final_validation_accuracy", "final_test_accuracy"))
        assert f"**{arith} validation accuracy (final)**: {val} %" in md
        assert f"| {arith} | {summary['backend']} | 2 | {val} | {test} |" in md
        assert run["final_validation_accuracy"] == summary["final_validation_accuracy"]
    assert "final validation acc (%)" in md
