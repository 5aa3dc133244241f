"""`nitisim run` calls each stage as the function its own command calls: the folder it leaves is the
one `nitisim train`, `simulate` and `compare` write by hand on the same config, file for file and
field for field (all but the measured times), and its parsed config is the written copy's."""
import json
from pathlib import Path

import numpy as np
import pytest

from nitisim.cli import main
from nitisim.train import config as train_config

TIMED = ("seconds", "images_per_second", "written")  # measured per run: the only fields allowed to differ


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".nitisim.lock"}


def _untimed(doc, here: str, there: str):
    """`doc` without measured times (any key naming seconds, images per second or the write time),
    its folder paths written as `there`'s."""
    if isinstance(doc, dict):
        return {k: _untimed(v, here, there) for k, v in doc.items() if not any(t in k for t in TIMED)}
    if isinstance(doc, list):
        return [_untimed(v, here, there) for v in doc]
    return doc.replace(here, there) if isinstance(doc, str) else doc


def _json(path: Path, here: Path, there: Path):
    return _untimed(json.loads(path.read_text()), str(here), str(there))


@pytest.fixture(scope="module")
def run_and_by_hand(tmp_path_factory):
    """The --tiny run with one accelerator, and the same stages by hand on (a copy of) the config it wrote."""
    root = tmp_path_factory.mktemp("stages")
    ran, hand = root / "ran", root / "hand"
    parsed = []  # every training config the run reads (load_config goes through parse_config too)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_config, "parse_config", lambda doc, src, read=train_config.parse_config:
                      parsed.append(src) or read(doc, src))
        assert main(["run", "--tiny", "--accelerators", "edge-16x16", "--out", str(ran)]) == 0
    assert parsed == ["--tiny"]  # once, before anything is written; every stage gets the parsed config
    config = hand / "configs" / "tiny-mlp.yaml"  # the config the run wrote, where the run keeps it
    config.parent.mkdir(parents=True)
    config.write_bytes((ran / "configs" / "tiny-mlp.yaml").read_bytes())
    config = str(config)
    int_dir, fp32_dir, sim = hand / "runs" / "tiny-mlp-int8", hand / "runs" / "tiny-mlp-fp32", hand / "sims" / "edge-16x16"
    assert main(["train", config, "--backend", "numpy", "--out", str(int_dir)]) == 0
    assert main(["train", config, "--arith", "fp32", "--device", "cpu", "--out", str(fp32_dir)]) == 0
    assert main(["simulate", "edge-16x16", "--model", "mlp", "--batch", "32", "--numerics-from", config,
                 "--out", str(sim)]) == 0
    assert main(["compare", str(int_dir), str(sim), "--fp32", str(fp32_dir), "--out", str(hand)]) == 0
    return ran, hand


def test_run_writes_the_files_the_stage_commands_write(run_and_by_hand):
    ran, hand = run_and_by_hand
    assert _files(ran) == _files(hand)
    assert {"runs/tiny-mlp-int8/timing.json", "sims/edge-16x16/summary.json", "compare.json"} <= _files(hand)


def test_run_files_hold_what_the_stage_commands_write(run_and_by_hand):
    ran, hand = run_and_by_hand
    for name in ("runs/tiny-mlp-int8/summary.json", "runs/tiny-mlp-fp32/summary.json",
                 "runs/tiny-mlp-int8/timing.json", "sims/edge-16x16/summary.json"):
        assert _json(ran / name, ran, hand) == _json(hand / name, hand, hand), name
    for name in ("runs/tiny-mlp-int8/metrics.jsonl", "runs/tiny-mlp-fp32/metrics.jsonl"):
        lines = [[_untimed(json.loads(line), str(root), str(hand)) for line in (root / name).read_text().splitlines()]
                 for root in (ran, hand)]
        assert lines[0] == lines[1] and len(lines[0]) == 1, name
    assert (ran / "sims/edge-16x16/report.md").read_text() == (hand / "sims/edge-16x16/report.md").read_text()
    # same-seed integer checkpoints are byte-identical
    assert (ran / "runs/tiny-mlp-int8/checkpoint.npz").read_bytes() == (hand / "runs/tiny-mlp-int8/checkpoint.npz").read_bytes()
    ours, theirs = (_json(root / "compare.json", root, hand) for root in (ran, hand))
    assert ours.keys() == theirs.keys()
    for section in ("run", "fp32_twin", "accelerators"):  # the measured-vs-simulated fits depend on the times
        assert ours[section] == theirs[section], section
    assert [a["accelerator"] for a in ours["agreement"]] == [a["accelerator"] for a in theirs["agreement"]]


def test_fp32_checkpoints_agree(run_and_by_hand):
    torch = pytest.importorskip("torch")
    ran, hand = run_and_by_hand
    a, b = (torch.load(root / "runs/tiny-mlp-fp32/checkpoint.pt", weights_only=True) for root in (ran, hand))
    assert a["meta"] == b["meta"] and a["model"].keys() == b["model"].keys()
    assert all(np.array_equal(a["model"][k].numpy(), b["model"][k].numpy()) for k in a["model"])


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "--train-subset", "64"], []])
def test_the_plan_is_the_config_the_run_writes(tmp_path, argv):
    """The stages get the config parsed once (from the user's file); reading back the copy the run
    writes gives the same TrainConfig, so a `nitisim train` of the copy trains the same run."""
    import argparse

    from nitisim import run_cli
    from nitisim.contract.models import load_yaml
    from nitisim.train.config import parse_config

    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    p = run_cli.plan(parser.parse_args(argv), tmp_path / "out")
    run_cli.write_plan(p)
    assert p.train == parse_config(load_yaml(p.config), str(p.config))
    assert p.train.source == str(p.config) and p.model == p.train.model_ref


def test_each_engine_flag_belongs_to_one_arithmetic(tmp_path, capsys):
    """--backend is the integer run's kernel table, --device the float32 run's torch device: the other
    arithmetic's flag is one error line naming it, before any config is read."""
    missing = str(tmp_path / "never-read.yaml")
    for argv, line in [
        (["--arith", "fp32", "--backend", "numpy"], "nitisim: error: --backend: picks integer kernels; --arith fp32 "
                                                     "runs on torch: pass --device cpu, cuda or auto instead"),
        (["--arith", "fp32", "--backend", "cuda"], "nitisim: error: --backend: picks integer kernels; --arith fp32 "
                                                    "runs on torch: pass --device cuda instead"),
        (["--device", "cpu"], "nitisim: error: --device: places the float32 run (--arith fp32); an integer run picks "
                              "its kernels with --backend"),
    ]:
        assert main(["train", missing, *argv]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]


def test_a_cuda_run_simulates_the_gpus_shipped_machine_model(tmp_path, monkeypatch, capsys):
    """The CUDA branch without a GPU: the integer run is told it ran on `cuda` (numpy kernels, host
    clock), so the run takes the shipped H200 model, parsed once before training, and simulates it."""
    from nitisim import run_cli
    from nitisim.contract.executor import HostNodeClock
    from nitisim.contract.reference import REFERENCE_KERNELS
    from nitisim.train import integer, stage

    monkeypatch.setattr(stage, "resolve_backend", lambda name, log=None: (REFERENCE_KERNELS, "cuda"))
    monkeypatch.setattr(integer, "node_clock", lambda name: HostNodeClock())
    out = tmp_path / "out"
    assert main(["run", "--tiny", "--backend", "cuda", "--device", "cpu", "--accelerators", "edge-16x16",
                 "--out", str(out)]) == 0
    stages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nitisim run: [")]
    assert [line.split("]")[0] for line in stages] == [f"nitisim run: [{i}/6" for i in range(1, 7)]
    assert "the GPU's machine model" in stages[1] and "torch, cpu" in stages[2]
    doc = json.loads((out / "compare.json").read_text())
    assert [a["label"] for a in doc["accelerators"]] == ["edge-16x16", run_cli.GPU_MODEL.stem]
    assert doc["run"]["backend"] == "cuda" and doc["fp32_twin"]["backend"] == "torch-cpu"
    assert not (out / "host").exists()
