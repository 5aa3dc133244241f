"""benchmarks/choose_lr.py: the fp32 twin's learning rate is chosen on validation accuracy alone."""
import functools
import json
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

SYNTHETIC = Path(__file__).resolve().parents[1] / "configs" / "train" / "synthetic-mlp.yaml"
TEST_KEYS = {"final_test_accuracy", "best_test_accuracy", "final_unaveraged_test_accuracy", "best_epoch"}


@pytest.fixture(scope="module")
def choose_lr():
    return load_benchmark("choose_lr")


class Watched(dict):
    """A summary that records every key read from it."""

    def __init__(self, lr, reads, **kw):
        super().__init__(**kw)
        self.lr, self.reads = lr, reads

    def __getitem__(self, key):
        self.reads.append((self.lr, key))
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.append((self.lr, key))
        return super().get(key, default)


def test_choose_is_the_best_validation_and_the_first_on_a_tie(choose_lr):
    assert choose_lr.choose({0.2: 0.80, 0.1: 0.91, 0.05: 0.90, 0.01: 0.5}) == 0.1
    assert choose_lr.choose({0.2: 0.90, 0.1: 0.91, 0.05: 0.91, 0.01: 0.5}) == 0.1


def test_picks_by_validation_and_reads_test_only_for_the_chosen_rate(choose_lr, tmp_path, capsys):
    """Test accuracy ranks the rates the other way round; the choice follows validation, and no test
    number of a rate that was not chosen is ever read."""
    validation = {0.2: 0.70, 0.1: 0.95, 0.05: 0.90, 0.02: 0.85, 0.01: 0.80}
    test = {0.2: 0.99, 0.1: 0.60, 0.05: 0.70, 0.02: 0.80, 0.01: 0.90}
    reads, trained = [], []

    def train(cfg, folder):
        trained.append((cfg.fp32.lr, cfg.seed, cfg.validation, folder.name))
        return Watched(cfg.fp32.lr, reads, final_validation_accuracy=validation[cfg.fp32.lr],
                       final_test_accuracy=test[cfg.fp32.lr], best_test_accuracy=test[cfg.fp32.lr], best_epoch=0)

    argv = [str(SYNTHETIC), "--seeds", "3", "4", "--out", str(tmp_path)]
    assert choose_lr.main(argv, train=train) == 0
    out = capsys.readouterr().out
    assert "chosen learning rate: 0.1 (final validation accuracy 95.00 %)" in out
    assert "test accuracy 60.00, 60.00 %" in out
    assert [(lr, seed) for lr, seed, _, _ in trained] == [(lr, s) for lr in validation for s in (3, 4)]
    assert {v for _, _, v, _ in trained} == {choose_lr.DEFAULT_VALIDATION}  # the config holds none out itself
    assert trained[0][3] == "lr-0.2-seed-3"
    assert {(lr, key) for lr, key in reads if key in TEST_KEYS} == {(0.1, "final_test_accuracy")}
    assert reads.index((0.1, "final_test_accuracy")) > max(i for i, (_, k) in enumerate(reads)
                                                           if k == "final_validation_accuracy")


@pytest.mark.parametrize("argv, field", [(["--lrs", "0.1", "0.05", "0.1"], "--lrs"),
                                         (["--lrs", "0.1", "0.05", "0.02", "-1"], "--lrs"),
                                         (["--validation", "0"], "--validation")])
def test_refusals_are_one_line(choose_lr, tmp_path, capsys, argv, field):
    def train(cfg, folder):  # pragma: no cover - a refusal trains nothing
        raise AssertionError("trained")

    assert choose_lr.main([str(SYNTHETIC), *argv, "--out", str(tmp_path)], train=train) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"choose_lr: error: {field}")


def test_tiny_synthetic_sweep_end_to_end(choose_lr, tmp_path, capsys, monkeypatch):
    """Four rates on the synthetic MLP, one epoch each on the CPU: the runs hold out the validation
    images, the choice is the rate with the best final validation accuracy in the run folders, and
    the docs section names it."""
    results = tmp_path / "results.md"
    monkeypatch.setattr(choose_lr, "write_section", functools.partial(choose_lr.write_section, path=results))
    lrs = ["0.05", "0.001", "0.0001", "0.00001"]
    argv = [str(SYNTHETIC), "--lrs", *lrs, "--epochs", "1", "--validation", "128", "--device", "cpu",
            "--out", str(tmp_path / "runs"), "--write"]
    assert choose_lr.main(argv) == 0
    captured = capsys.readouterr()
    finals = {}
    for lr in lrs:
        folder = tmp_path / "runs" / f"lr-{float(lr):g}-seed-1"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["validation_images"] == 128 and summary["config"]["fp32"]["lr"] == float(lr)
        finals[float(lr)] = summary["final_validation_accuracy"]
        assert f"lr {float(lr):g}: final validation accuracy {100 * finals[float(lr)]:.2f} %" in captured.out
    chosen = max(finals, key=finals.get)
    assert len(set(finals.values())) > 1  # the rates differ, so the choice means something
    assert f"chosen learning rate: {chosen:g}" in captured.out
    assert "epoch 1/1: train" in captured.err and " val " in captured.err  # each run's progress on the terminal
    text = results.read_text()
    assert "<!-- BEGIN choose-lr-synthetic-mlp -->" in text and f"Chosen: lr {chosen:g}." in text
    assert f"| {chosen:g} | {100 * finals[chosen]:.2f} | chosen" in text
