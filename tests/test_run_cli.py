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


def test_default_config_gets_the_short_run_overrides(tmp_path, monkeypatch):
    """Without --config: the shipped default, with the short-run overrides (subset, epochs); a relative model path is
    made absolute so the config still works from the output folder."""
    import argparse

    import yaml

    from nitisim import run_cli

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "net.yaml").write_text("input: [28, 28, 1]\nlayers: [flatten, {linear: {out: 10}}]\n")
    default = tmp_path / "cfg" / "fashion-lenet.yaml"
    default.write_text("model: net.yaml\ndataset: fashion-mnist\nbatch: 256\nepochs: 15\n"
                       "mu_schedule: [{from_epoch: 0, mu: 2}]\n")
    monkeypatch.setattr(run_cli, "DEFAULT_CONFIG", default)
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    p = run_cli.plan(parser.parse_args([]), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # planning writes nothing
    run_cli.write_plan(p)
    doc = yaml.safe_load(p.config.read_text())
    assert doc["train_subset"] == (run_cli.DEFAULT_TRAIN_SUBSET or None)  # 0 is written as None: all images
    assert doc["test_subset"] == run_cli.DEFAULT_TEST_SUBSET
    assert p.epochs == run_cli.DEFAULT_EPOCHS and p.batch == 256 and p.int_backend == "auto"
    assert doc["model"] == p.model == str(tmp_path / "cfg" / "net.yaml")
    everything = run_cli.plan(parser.parse_args(["--train-subset", "0", "--epochs", "3"]), tmp_path / "out2")
    run_cli.write_plan(everything)
    doc = yaml.safe_load(everything.config.read_text())
    assert doc["train_subset"] is None and everything.epochs == 3
