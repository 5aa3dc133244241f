"""benchmarks/accuracy.py: the seed statistics of its table, and that a rewrite keeps other rows,
replaces a row of the same key and carries rows written before the seeds column."""
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def accuracy():
    return load_benchmark("accuracy")


def _summary(final: float, best: float, ips: float = 1000.0, backend: str = "cpu", seed: int = 0) -> dict:
    config = {"model": "m.yaml", "model_spec": {"name": "m"}, "dataset": "fashion-mnist", "batch": 128, "seed": seed,
              "mu_schedule": [{"from_epoch": 0, "mu": 2}], "activation_rounding": "pseudo_stochastic",
              "error_rounding": "pseudo_stochastic", "loss_variant": "fine", "update_rule": "plain",
              "weight_headroom_bits": 2, "augment": "crop_flip", "crop_pad": 2}
    return {"final_test_accuracy": final, "best_test_accuracy": best, "images_per_second": ips,
            "backend": backend, "config": config}


def test_one_seed_is_final_and_best(accuracy):
    assert accuracy.accuracy_cell([_summary(0.9123, 0.9150)]) == "91.23 (91.50)"


def test_several_seeds_are_mean_sample_std_and_range(accuracy):
    cell = accuracy.accuracy_cell([_summary(0.93, 0.94), _summary(0.94, 0.94), _summary(0.95, 0.95)])
    assert cell == "94.00 ± 1.00 (93.00-95.00)"  # sample std of 93, 94, 95 is 1


def test_row_puts_int8_and_fp32_side_by_side_with_the_gap_of_means(accuracy):
    s_int = [_summary(0.90, 0.90, 2000), _summary(0.92, 0.92, 1000)]
    s_fp = [_summary(0.93, 0.93, 500, "torch-cpu"), _summary(0.93, 0.94, 700, "torch-cpu")]
    cells = accuracy._cells(accuracy.row(ROOT / "configs" / "x.yaml", 15, s_int, s_fp, "cmd"))
    assert cells[:5] == ["configs/x.yaml", "m", "fashion-mnist", "15", "2"]
    assert cells[5].startswith("91.00 ± 1.41") and cells[6] == "93.00 ± 0.00 (93.00-93.00)"
    assert cells[7] == "+2.00" and cells[8] == "1,500 (cpu)" and cells[9] == "600 (torch-cpu)"
    assert "augment crop_flip pad 2" in cells[10]
    with pytest.raises(ValueError):
        accuracy.row(ROOT / "x.yaml", 15, s_int, s_fp[:1], "cmd")


def test_table_rewrite_keeps_migrates_and_replaces(accuracy, tmp_path):
    old_row = ("| configs/train/fashion-lenet.yaml | lenet | fashion-mnist | 20 | 91.23 (91.23) | 91.91 (91.95) | +0.68 "
               "| 13,985 (cpu) | 3,306 (torch-cpu) | batch 256 | `old` | machine | 2026-11-29 |")
    md = tmp_path / "results.md"
    md.write_text("# Measured results\n\n<!-- BEGIN accuracy -->\n## Accuracy\n\n"
                  + accuracy.TABLE_HEADER.replace("| seeds ", "") + "\n|---|\n" + old_row + "\n<!-- END accuracy -->\n")
    one = accuracy.row(ROOT / "configs" / "v.yaml", 15, [_summary(0.9, 0.9)], [_summary(0.91, 0.91)], "one")
    three = accuracy.row(ROOT / "configs" / "v.yaml", 15, [_summary(0.9, 0.9)] * 3, [_summary(0.91, 0.91)] * 3, "c3")
    accuracy.write_table(md, one, "one")
    accuracy.write_table(md, three, "c3")
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| configs/")]
    assert len(rows) == 3  # lenet kept, and a 3-seed row does not replace the 1-seed row
    assert accuracy._cells(rows[0])[4] == "1" and "91.23 (91.23)" in rows[0]  # migrated, not lost
    assert all(len(accuracy._cells(r)) == accuracy.TABLE_HEADER.count("|") - 1 for r in rows)
    assert sum(ln.startswith("| config |") for ln in md.read_text().splitlines()) == 1  # the old header is gone
    again = accuracy.row(ROOT / "configs" / "v.yaml", 15, [_summary(0.8, 0.8)] * 3, [_summary(0.91, 0.91)] * 3, "c3")
    accuracy.write_table(md, again, "c3")
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| configs/")]
    assert len(rows) == 3 and "80.00 ± 0.00" in rows[2] and "90.00 ± 0.00" not in md.read_text()


def test_settings_name_cutout_and_weight_averaging(accuracy):
    cfg = dict(_summary(0.9, 0.9)["config"], erase_size=8, average_epochs=8)
    text = accuracy.settings(cfg)
    assert text.endswith("augment crop_flip pad 2, cutout 8 px, weights averaged over the last 8 epochs")
    assert "averaged" not in accuracy.settings(_summary(0.9, 0.9)["config"])
