"""configs/train/fashion-vgg-small.yaml and fashion-vgg-wide.yaml: the models they name; and a
short run of each and of configs/train/fashion-lenet.yaml (each config's model, numerics, update
rule, headroom, augmentation and weight averaging; a tiny synthetic dataset) that the numpy reference
and the C backend train bit for bit the same."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from nitisim.contract.models import Conv, Dropout, Linear, MaxPool
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.contract.models import infer_shapes
from nitisim.train.config import load_config, parse_config
from nitisim.train.data import load_for_config
from nitisim.train.integer import IntegerTrainer
from nitisim.train.loop import run_training
from nitisim.train.progress import Progress
from nitisim.train.runfiles import RunFolder

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "fashion-vgg-small.yaml"
LENET_CONFIG = CONFIG.parent / "fashion-lenet.yaml"
WIDE_CONFIG = CONFIG.parent / "fashion-vgg-wide.yaml"


def test_config_is_the_28x28_vgg_small_integer_only_with_augmentation():
    cfg = load_config(CONFIG)
    layers = cfg.model.layers
    assert cfg.model.input_shape == (28, 28, 1) and cfg.dataset == "fashion-mnist"
    assert [layer.out_channels for layer in layers if isinstance(layer, Conv)] == [32, 32, 64, 64, 128, 128]
    assert all(layer.kernel == 3 and layer.padding == 1 for layer in layers if isinstance(layer, Conv))
    assert sum(isinstance(layer, MaxPool) for layer in layers) == 3
    assert isinstance(layers[-2], Dropout) and isinstance(layers[-1], Linear)
    assert infer_shapes(cfg.model, 1)[-2:] == [(1, 3 * 3 * 128), (1, 10)]  # the classifier, in and out
    assert (cfg.augment, cfg.crop_pad, cfg.input_path) == ("crop_flip", 2, "int8")
    assert cfg.numerics.loss_variant == "fine"  # the integer softmax gradient, not a float one


def test_wide_config_is_the_small_one_at_twice_the_widths_with_cutout_and_averaging():
    small, wide = load_config(CONFIG), load_config(WIDE_CONFIG)
    widths = [layer.out_channels for layer in wide.model.layers if isinstance(layer, Conv)]
    assert widths == [2 * layer.out_channels for layer in small.model.layers if isinstance(layer, Conv)]
    assert (wide.epochs, wide.erase_size, wide.average_epochs, wide.average_from_epoch) == (40, 8, 8, 32)
    assert wide.mu_at(wide.average_from_epoch) == 0  # the averaged epochs are the mu 0 phase
    assert (wide.numerics, wide.augment, wide.crop_pad, wide.weight_headroom_bits) == \
           (small.numerics, small.augment, small.crop_pad, small.weight_headroom_bits)


def _short_run(config: Path) -> object:
    """A shipped config on 32 synthetic images: 4 steps of 8, then 20 test images in slices of 8."""
    doc = yaml.safe_load(config.read_text())
    doc.update(dataset="synthetic", synthetic={"train": 32, "test": 20}, batch=8, epochs=1, eval_batch=8,
               mu_schedule=[{"from_epoch": 0, "mu": 3}])  # a large step, so 4 steps move many weights
    if doc.get("average_epochs"):
        doc["average_epochs"] = 1  # the one epoch's end weights, averaged: the integer mean path runs
    return parse_config(doc, str(config))  # the model path resolves next to the shipped config


@pytest.mark.cpu_lib
@pytest.mark.parametrize("config", [CONFIG, WIDE_CONFIG, LENET_CONFIG],
                         ids=["fashion-vgg-small", "fashion-vgg-wide", "fashion-lenet"])
def test_numpy_and_c_backends_train_the_config_bit_for_bit(tmp_path, config):
    from nitisim.backends import kernel_table

    cfg = _short_run(config)
    ds = load_for_config(cfg, None)
    results = {}
    for name, kernels in (("numpy", REFERENCE_KERNELS), ("cpu", kernel_table("cpu"))):
        trainer = IntegerTrainer(cfg, kernels, name)
        initial = {k: v.m.copy() for k, v in trainer.params.items()}
        run = RunFolder(tmp_path / name, "int8")
        run.create()
        summary = run_training(cfg, trainer, ds, run, progress=Progress(enabled=False))
        results[name] = (trainer.params, summary, run.read_metrics())
    (p_np, s_np, m_np), (p_c, s_c, m_c) = results["numpy"], results["cpu"]
    assert sorted(p_np) == sorted(p_c)
    for key in p_np:
        assert p_np[key].e == p_c[key].e, key
        np.testing.assert_array_equal(p_np[key].m, p_c[key].m, err_msg=key)
    moved = [k for k in p_np if not np.array_equal(p_np[k].m, initial[k])]
    assert len(moved) == len(p_np)  # every layer trained: the comparison is not of untouched weights
    assert [(m["train_accuracy"], m["test_accuracy"], m.get("averaged_test_accuracy")) for m in m_np] == \
           [(m["train_accuracy"], m["test_accuracy"], m.get("averaged_test_accuracy")) for m in m_c]
    assert ("averaged_test_accuracy" in m_np[-1]) == bool(cfg.average_epochs)
    assert s_np["steps_per_epoch"] == 4 and s_np["config"]["augment"] == "crop_flip"
