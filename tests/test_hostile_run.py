"""`nitisim run` checks every config it will use before it trains: a bad accelerator, host or training
config is one line naming the user's file and field, exit 2, and nothing is trained or written."""
import os
from pathlib import Path

import pytest
import yaml

from nitisim import run_cli
from nitisim.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trainings(monkeypatch):
    """Every training the run starts (the stage functions `nitisim train` calls too), recorded
    instead of run: any call makes these tests fail before the run goes on."""
    import nitisim.train.stage as stage

    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("a training started")

    monkeypatch.setattr(stage, "train_int8", record)
    monkeypatch.setattr(stage, "train_fp32", record)
    return calls


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _bad_accelerator(tmp_path) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "accelerators" / "edge-16x16.yaml").read_text())
    doc["clock_mhz"] = -5
    path = tmp_path / "bad-acc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_bad_accelerator_stops_the_run_before_any_training(tmp_path, capsys, trainings):
    bad, out = _bad_accelerator(tmp_path), tmp_path / "out"
    assert main(["run", "--tiny", "--accelerators", "edge-16x16", str(bad), "--out", str(out)]) == 2
    assert _one_line(capsys) == f"nitisim: error: {bad}: clock_mhz: must be positive, got -5"
    assert trainings == [] and not out.exists()


def test_unknown_accelerator_name_stops_the_run_before_any_training(tmp_path, capsys, trainings):
    out = tmp_path / "out"
    assert main(["run", "--tiny", "--accelerators", "no-such-chip", "--out", str(out)]) == 2
    assert _one_line(capsys).startswith("nitisim: error: no-such-chip: arch: not a YAML file nor a shipped accelerator")
    assert trainings == [] and not out.exists()


def test_bad_training_config_names_the_users_file_not_the_copy(tmp_path, capsys, trainings):
    doc = yaml.safe_load((ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text())
    doc["seed"] = -3
    cfg, out = tmp_path / "mine.yaml", tmp_path / "out"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["run", "--config", str(cfg), "--out", str(out)]) == 2
    assert _one_line(capsys) == f"nitisim: error: {cfg}: seed: must be in 0..4294967295, got -3"
    assert trainings == [] and not out.exists()


def test_bad_model_of_a_training_config_names_the_model_file(tmp_path, capsys, trainings):
    (tmp_path / "net.yaml").write_text("input: [28, 28, 1]\nlayers: [flatten, {linear: {out: 0}}]\n")
    doc = yaml.safe_load((ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text())
    doc["model"] = "net.yaml"  # relative to the config's folder, as the user wrote it
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert _one_line(capsys) == f"nitisim: error: {tmp_path / 'net.yaml'}: layers[1].linear.out: must be a positive integer, got 0"
    assert trainings == []


def test_train_subset_smaller_than_a_batch_names_the_flag(tmp_path, capsys, trainings):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text((ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text().replace("dataset: synthetic",
                                                                                         "dataset: fashion-mnist")
                   .replace("synthetic: {train: 512, test: 256}\n", ""))
    assert main(["run", "--config", str(cfg), "--train-subset", "10", "--out", str(tmp_path / "out")]) == 2
    assert _one_line(capsys) == "nitisim: error: --train-subset: 10 images make no batch of 64"
    assert trainings == []


def test_bad_gpu_machine_model_is_checked_when_the_run_may_use_cuda(tmp_path, capsys, trainings, monkeypatch):
    host = yaml.safe_load(run_cli.GPU_MODEL.read_text())
    host["clock_mhz"] = 0
    bad = tmp_path / "gpu.yaml"
    bad.write_text(yaml.safe_dump(host))
    monkeypatch.setattr(run_cli, "GPU_MODEL", bad)
    argv = ["run", "--tiny", "--accelerators", "edge-16x16", "--out", str(tmp_path / "out")]
    assert main([*argv, "--backend", "cuda"]) == 2
    assert _one_line(capsys).startswith(f"nitisim: error: {bad}: clock_mhz: ")
    assert trainings == []
    run_cli.check_machine_configs(["edge-16x16"], "cpu")  # a CPU run never reads the GPU's model


def test_a_second_run_into_a_busy_output_folder_is_refused(tmp_path, capsys):
    """`nitisim run` holds its output folder's lock: another run there would rewrite its configs and report."""
    from nitisim.train.folder_lock import locked_folder

    out = tmp_path / "out"
    with locked_folder(out):  # another holder (a flock is per open file, so this process counts as one)
        assert main(["run", "--tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nitisim: error: {out}: in use by process {os.getpid()}") and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == [".nitisim.lock"]  # nothing else was written
