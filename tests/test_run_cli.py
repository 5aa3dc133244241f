"""`nitisim run`: the main job end to end in its --tiny form, and its argument errors."""
import json
from pathlib import Path

from nitisim.cli import main

ACCELERATORS = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerators").glob("*.yaml"))


def test_run_tiny_trains_simulates_and_reports(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--tiny", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in stdout
    for needle in ("int8 test accuracy", "fp32 test accuracy", "images/s", "cycles", "uJ", "R^2"):
        assert needle in stdout
    doc = json.loads((out / "compare.json").read_text())
    assert doc["run"]["arith"] == "int8" and doc["fp32_twin"]["arith"] == "fp32"
    assert len(doc["accelerators"]) == len(ACCELERATORS) > 0
    assert len(doc["agreement"]) == len(ACCELERATORS)  # the integer run has timing.json
    assert all(a["fit"] is not None for a in doc["agreement"])
    assert (out / "report.md").exists() and (out / "configs" / "tiny-mlp.yaml").exists()
    for sub in ("runs/tiny-mlp-int8/timing.json", "runs/tiny-mlp-fp32/summary.json"):
        assert (out / sub).exists()
    assert all((out / "sims" / p.stem / "summary.json").exists() for p in ACCELERATORS)


def test_run_tiny_with_one_accelerator_and_overrides(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--tiny", "--out", str(out), "--accelerators", "edge-16x16", "--epochs", "2",
                 "--train-subset", "64"]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert [a["name"] for a in doc["accelerators"]] == ["edge-16x16"]
    assert len(doc["run"]["epochs"]) == 2
    summary = json.loads((out / "runs" / "tiny-mlp-int8" / "summary.json").read_text())
    assert summary["train_images"] == 64


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nitisim: error: ")
    return err[0]


def test_run_argument_errors(tmp_path, capsys):
    assert "missing.yaml" in _one_line_error(capsys, ["run", "--config", str(tmp_path / "missing.yaml"),
                                                      "--out", str(tmp_path / "o")])
    assert "--epochs" in _one_line_error(capsys, ["run", "--tiny", "--epochs", "0", "--out", str(tmp_path / "o")])
    assert "--tiny" in _one_line_error(capsys, ["run", "--tiny", "--config", "x.yaml", "--out", str(tmp_path / "o")])
