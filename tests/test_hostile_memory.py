"""Models far too large for memory: training refuses them in one line (bytes needed against bytes
available) before anything is allocated; `nitisim models` and `nitisim simulate`, which allocate
nothing, still work. The machine's available memory is replaced by a fixed number where a test needs
an exact message; the refusals on the real number use models needing petabytes."""
from pathlib import Path

import pytest
import yaml

from nitisim.cli import main
from nitisim.memory_estimate import available_bytes, check_training_fits, training_estimate
from nitisim.contract.errors import UserInputError
from nitisim.contract.models import builtin_models, resolve_model
from nitisim.train.config import load_config
from train_configs import shipped_train_configs

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30
ENGINE = {"int8": ["--backend", "numpy"], "fp32": ["--device", "cpu"]}  # kernel table | torch device


def _model(tmp_path, layers: str, name="huge", input_shape="[28, 28, 1]") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ninput: {input_shape}\nclasses: 10\nlayers:\n{layers}")
    return path


HUGE_LINEAR = "  - flatten\n  - linear: {out: 100000000}\n  - relu\n  - linear: {out: 10}\n"
HUGE_CONV = "  - conv: {out: 1000000, kernel: 3, padding: 1}\n  - relu\n  - flatten\n  - linear: {out: 10}\n"
# 784e12 int8 weights (a 28x28 image into 1e12 outputs): no machine holds that
PETABYTE_LINEAR = "  - flatten\n  - linear: {out: 1000000000000}\n  - linear: {out: 10}\n"


def _config(tmp_path, model: Path, batch=64) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text())
    doc["model"], doc["batch"] = str(model), batch
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_estimate_of_the_mlp_by_hand():
    """mlp = flatten, 784->256, relu, 256->128, relu, 128->10 at batch 8."""
    mlp = builtin_models()["mlp"]
    weights = 784 * 256 + 256 * 128 + 128 * 10
    activations = 8 * (784 + 256 + 256 + 128 + 128 + 10)
    est = training_estimate(mlp, 8, "int8", "plain")
    assert est.weights_bytes == weights
    assert est.activations_bytes == activations
    assert est.accumulator_bytes == 4 * 784 * 256  # the largest weight gradient, int32 at a batch of 8
    assert est.init_bytes == 8 * 784 * 256  # that weight drawn as float64
    assert est.total_bytes == weights + max(8 * 784 * 256, activations + 4 * 784 * 256)
    assert training_estimate(mlp, 8, "int8", "momentum").weights_bytes == 5 * weights
    assert training_estimate(mlp, 8, "int8", "shadow16").weights_bytes == 3 * weights
    fp = training_estimate(mlp, 8, "fp32", momentum=True)
    assert fp.weights_bytes == 12 * weights and fp.activations_bytes == 4 * activations
    assert fp.accumulator_bytes == 4 * 8 * 784 and fp.init_bytes == 0
    assert training_estimate(mlp, 8, "fp32", momentum=False).weights_bytes == 8 * weights


def test_conv_accumulators_are_not_counted_but_their_weight_gradient_is(tmp_path):
    """A conv's int32 maps can be fused with their requantize (not a lower bound); its weight
    gradient is always written, int64 when the reduction could leave int32."""
    model = resolve_model(str(_model(tmp_path, HUGE_CONV)))
    est = training_estimate(model, 64, "int8")
    conv_w, fc_in = 10**6 * 9, 28 * 28 * 10**6
    assert est.weights_bytes == conv_w + fc_in * 10
    assert est.accumulator_bytes == max(8 * conv_w, 4 * 10 * fc_in, 4 * 64 * fc_in)  # the linear's input error
    assert est.activations_bytes == 64 * (3 * fc_in + 10)


def test_refusal_names_the_file_and_both_numbers(tmp_path):
    model = resolve_model(str(_model(tmp_path, HUGE_LINEAR)))
    need = training_estimate(model, 64, "int8").total_bytes
    with pytest.raises(UserInputError) as err:
        check_training_fits(model, 64, "int8", "cfg.yaml", available=(8 * GiB, "a test"))
    assert err.value.source == "cfg.yaml" and err.value.field == "model"
    assert err.value.message.startswith(f"huge at batch 64 needs at least {need:,} bytes ")
    assert f"this machine has {8 * GiB:,} bytes (8.0 GiB) available (a test)" in err.value.message
    # what fits is returned, not refused
    assert check_training_fits(model, 64, "int8", "cfg.yaml", available=(need, "a test")).total_bytes == need


def test_a_gpu_run_checks_only_the_parameters_on_the_host(tmp_path):
    model = resolve_model(str(_model(tmp_path, HUGE_CONV)))
    est = training_estimate(model, 64, "int8")
    host_share = est.weights_bytes + est.init_bytes
    assert host_share < est.total_bytes
    check_training_fits(model, 64, "int8", "c.yaml", on_device=True, available=(host_share, "a test"))
    with pytest.raises(UserInputError):
        check_training_fits(model, 64, "int8", "c.yaml", on_device=False, available=(host_share, "a test"))


@pytest.mark.parametrize("arith", ["int8", "fp32"])
@pytest.mark.parametrize("layers", [HUGE_LINEAR, HUGE_CONV], ids=["linear-1e8", "conv-1e6"])
def test_train_refuses_in_one_line_before_allocating(tmp_path, capsys, monkeypatch, arith, layers):
    """The real trainers, with the machine's memory fixed at 16 GiB; nothing is written."""
    import nitisim.memory_estimate as me

    monkeypatch.setattr(me, "available_bytes", lambda: (16 * GiB, "MemAvailable in /proc/meminfo"))
    cfg, out = _config(tmp_path, _model(tmp_path, layers)), tmp_path / "run"
    assert main(["train", str(cfg), "--arith", arith, *ENGINE[arith],
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"nitisim: error: {cfg}: model: huge at batch 64 needs at least ")
    assert f"for {arith} training" in err and f"this machine has {16 * GiB:,} bytes" in err
    assert not out.exists()


@pytest.mark.parametrize("arith", ["int8", "fp32"])
def test_train_refuses_before_reading_or_making_the_data_set(tmp_path, capsys, monkeypatch, arith):
    """A synthetic data set of huge images would itself exhaust memory: the refusal comes first."""
    import nitisim.train.stage as stage  # the training `nitisim train` runs

    def no_data(*args):
        raise AssertionError("the data set was loaded before the memory check")

    monkeypatch.setattr(stage, "load_for_config", no_data)
    cfg = _config(tmp_path, _model(tmp_path, "  - flatten\n  - linear: {out: 10}\n", input_shape="[100000, 100000, 3]"))
    assert main(["train", str(cfg), "--arith", arith, *ENGINE[arith],
                 "--out", str(tmp_path / "run")]) == 2
    assert "bytes" in capsys.readouterr().err


@pytest.mark.parametrize("arith", ["int8", "fp32"])
def test_train_refuses_on_this_machines_real_memory(tmp_path, capsys, arith):
    cfg = _config(tmp_path, _model(tmp_path, PETABYTE_LINEAR), batch=2)
    assert main(["train", str(cfg), "--arith", arith, *ENGINE[arith],
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bytes" in err and "available (" in err


def test_run_refuses_before_the_integer_training(tmp_path, capsys):
    cfg = _config(tmp_path, _model(tmp_path, PETABYTE_LINEAR), batch=2)
    out = tmp_path / "out"
    assert main(["run", "--config", str(cfg), "--backend", "numpy", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"nitisim: error: {cfg}: model: huge at batch 2 needs")
    assert not out.exists()


def test_models_and_simulate_list_a_huge_model_without_allocating(tmp_path, capsys):
    path = _model(tmp_path, HUGE_LINEAR)
    assert main(["models", str(path)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert row.split() == ["huge", "28x28x1", "79,400,000,000", f"{(784e8 + 1e9) * 256 / 1e6:,.0f}",
                           row.split()[-1]]  # every column apart, however wide
    assert main(["simulate", "edge-16x16", "--model", str(path), "--batch", "8", "--out", str(tmp_path / "s")]) == 0
    assert "huge batch 8 on edge-16x16" in capsys.readouterr().out


@pytest.mark.parametrize("path", shipped_train_configs())
def test_shipped_training_configs_are_never_refused_on_a_small_machine(path):
    """Every shipped config needs under 4 GiB by the estimate, so a laptop is not told it cannot train them."""
    cfg = load_config(path)
    for arith in ("int8", "fp32"):
        check_training_fits(cfg.model, cfg.batch, arith, str(path), update_rule=cfg.numerics.update_rule,
                            available=(4 * GiB, "a small machine"))


def test_available_bytes_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   24197544 kB\n")
    assert available_bytes(meminfo) == (24197544 * 1024, "MemAvailable in /proc/meminfo")
    found = available_bytes(tmp_path / "missing")  # no /proc: the OS's available pages
    assert found is not None and found[0] > 0 and found[1] == "os.sysconf available pages"
