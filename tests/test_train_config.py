"""Training config loading: the shipped configs load; every bad file is one line naming file and key."""
from pathlib import Path

import pytest

from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.train.config import load_config
from train_configs import shipped_train_configs

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "train"

GOOD = """
model: mlp
dataset: synthetic
synthetic: {train: 128, test: 64}
batch: 32
epochs: 1
mu_schedule:
  - {from_epoch: 0, mu: 3}
  - {from_epoch: 5, mu: 2}
fp32:
  lr: 0.1
  weight_decay: 5e-4
  lr_schedule: {kind: step, milestones: [3, 6], gamma: 0.5}
"""


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", shipped_train_configs())
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.epochs >= 1 and cfg.mu_schedule[0].from_epoch == 0


def test_good_config(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.model.name == "mlp" and cfg.batch == 32
    assert [cfg.mu_at(e) for e in (0, 4, 5, 99)] == [3, 3, 2, 2]
    assert cfg.fp32.weight_decay == 5e-4  # the YAML 1.1 "5e-4 is a string" quirk is accepted
    assert cfg.fp32.lr_schedule.milestones == (3, 6)
    assert cfg.numerics.activation_rounding == "pseudo_stochastic"  # NITI's default


def test_model_path_relative_to_config(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.yaml").write_text(
        "input: [28, 28, 1]\nlayers: [flatten, {linear: {out: 10}}]\n")
    cfg = load_config(_write(tmp_path, GOOD.replace("model: mlp", "model: models/tiny.yaml")))
    assert cfg.model.name == "tiny"


def test_hash_ignores_epochs_but_not_steps(tmp_path):
    a = load_config(_write(tmp_path, GOOD))
    assert a.step_hash("int8") == a.with_epochs(9).step_hash("int8")
    b = load_config(_write(tmp_path, GOOD.replace("mu: 3", "mu: 4"), "b.yaml"))
    assert a.step_hash("int8") != b.step_hash("int8")
    c = load_config(_write(tmp_path, GOOD.replace("lr: 0.1", "lr: 0.2"), "c.yaml"))
    assert a.step_hash("int8") == c.step_hash("int8") and a.step_hash("fp32") != c.step_hash("fp32")


@pytest.mark.parametrize("text,key", [
    (GOOD + "learning_rate: 3\n", "learning_rate"),  # unknown key
    (GOOD.replace("batch: 32\n", ""), "batch"),  # missing key
    (GOOD.replace("batch: 32", "batch: thirty-two"), "batch"),  # bad type
    (GOOD.replace("batch: 32", "batch: true"), "batch"),  # a bool is not an int
    (GOOD.replace("batch: 32", "batch: 0"), "batch"),
    (GOOD.replace("dataset: synthetic", "dataset: imagenet"), "dataset"),
    (GOOD.replace("model: mlp", "model: resnet"), "model"),
    (GOOD.replace("mu: 3}", "mu: -1}"), "mu_schedule[0].mu"),
    (GOOD.replace("{from_epoch: 0, mu: 3}", "{from_epoch: 1, mu: 3}"), "mu_schedule[0].from_epoch"),
    (GOOD.replace("from_epoch: 5", "from_epoch: 0"), "mu_schedule[1].from_epoch"),
    (GOOD.replace("{from_epoch: 0, mu: 3}", "{mu: 3}"), "mu_schedule[0].from_epoch"),
    (GOOD.replace("{from_epoch: 0, mu: 3}", "{from_epoch: 0, mu: 3, lr: 1}"), "mu_schedule[0].lr"),
    (GOOD + "update_rule: adam\n", "update_rule"),
    (GOOD + "activation_rounding: floor\n", "activation_rounding"),
    (GOOD + "augment: mixup\n", "augment"),
    (GOOD + "erase_size: -2\n", "erase_size"),
    (GOOD + "erase_size: 40\n", "erase_size"),  # wider than mlp's 28x28 input
    (GOOD + "erase_size: 8px\n", "erase_size"),
    (GOOD + "average_epochs: -1\n", "average_epochs"),
    (GOOD + "average_epochs: 99\n", "average_epochs"),  # more than the run's epochs
    (GOOD + "average_epochs: last\n", "average_epochs"),
    (GOOD.replace("lr: 0.1", "lr: fast"), "fp32.lr"),
    (GOOD.replace("lr: 0.1", "lr: 0"), "fp32.lr"),
    (GOOD.replace("kind: step", "kind: cosine"), "fp32.lr_schedule.milestones"),
    (GOOD.replace("milestones: [3, 6]", "milestones: [6, 3]"), "fp32.lr_schedule.milestones"),
    (GOOD.replace("  lr: 0.1\n", "  lr: 0.1\n  nesterov: true\n"), "fp32.nesterov"),
    (GOOD.replace("dataset: synthetic", "dataset: mnist"), "synthetic"),
    (GOOD.replace("synthetic: {train: 128, test: 64}", "synthetic: {train: 128, size: 3}"), "synthetic.size"),
    (GOOD + "train_subset: 16\n", "train_subset"),  # fewer than one batch
    (GOOD + "seed: -3\n", "seed"),
    ("batch: [1, 2\n", "line"),  # malformed YAML
    ("- just\n- a list\n", None),
    ("", None),
])
def test_bad_configs(tmp_path, capsys, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(UserInputError) as err:
        load_config(path)
    assert err.value.source == str(path)
    if key is not None:
        assert key in (err.value.field or "")
    # through the command line: exit status 2, one stderr line naming the file, no traceback
    assert main(["train", str(path)]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and str(path) in out and "Traceback" not in out
    if key is not None:
        assert key in out


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_bad_model_file_named(tmp_path, capsys):
    (tmp_path / "m.yaml").write_text("input: [28, 28, 1]\nlayers: [flatten, {linear: {out: 10, bias: 1}}]\n")
    path = _write(tmp_path, GOOD.replace("model: mlp", "model: m.yaml"))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml" in err and "bias" in err and err.count("\n") == 1
