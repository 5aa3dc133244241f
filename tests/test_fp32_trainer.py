"""The float32 trainer's inputs, steps and evaluation against a plain numpy/torch restatement of them."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nitisim.datasets.transforms import float_normalized, to_int8  # noqa: E402
from nitisim.contract.models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU  # noqa: E402
from nitisim.contract.numerics import hash_key  # noqa: E402
from nitisim.train.config import load_config  # noqa: E402
from nitisim.train.data import float_stats  # noqa: E402
from nitisim.train.fp32 import _DROPOUT_STREAM, Fp32Trainer, SpecNet  # noqa: E402

SYNTHETIC = Path(__file__).resolve().parents[1] / "configs" / "train" / "synthetic-mlp.yaml"

# conv, pool, flatten, dropout: every layer kind whose numerics the trainer's step touches
SMALL = ModelSpec("small", (8, 8, 3), (Conv(4, 3, 1, 1), ReLU(), MaxPool(2, 2), Flatten(), Dropout(0.5),
                                       Linear(16), ReLU(), Linear(10)))


def _config(input_path="int8", dataset="cifar10", model=SMALL):
    cfg = load_config(SYNTHETIC)
    return dataclasses.replace(cfg, model=model, dataset=dataset, input_path=input_path, batch=16, eval_batch=7)


def _batch(rng, n, shape=(8, 8, 3)):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


@pytest.mark.parametrize("dataset,channels", [("cifar10", 3), ("mnist", 1), ("synthetic", 1)])
@pytest.mark.parametrize("input_path", ["int8", "float"])
def test_inputs_equal_the_numpy_transforms_for_every_pixel(dataset, channels, input_path):
    model = dataclasses.replace(SMALL, input_shape=(16, 16, channels))
    trainer = Fp32Trainer(_config(input_path, dataset, model), "cpu")
    pixels = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1), channels, axis=3)
    if input_path == "float":
        expected = float_normalized(pixels, *float_stats(dataset, channels))
    else:
        m, e = to_int8(pixels)
        expected = np.ldexp(m.astype(np.float32), e)
    got = trainer._inputs(pixels)
    assert got.dtype == torch.float32 and got.shape == pixels.shape
    assert np.array_equal(got.numpy().view(np.uint32), expected.view(np.uint32))  # bit for bit
    frozen = pixels.copy()
    frozen.flags.writeable = False  # evaluation slices the read-only dataset arrays
    assert torch.equal(trainer._inputs(frozen), got)
    with pytest.raises(TypeError):
        trainer._inputs(pixels.astype(np.int16))


def _reference_step(net, opt, seed, step, images, labels):
    """The step as first written: torch.manual_seed and numpy-converted inputs."""
    torch.manual_seed(hash_key(seed, step, _DROPOUT_STREAM))
    net.train()
    m, e = to_int8(images)
    y = torch.from_numpy(labels)
    logits = net(torch.from_numpy(np.ldexp(m.astype(np.float32), e)))
    loss = torch.nn.functional.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return int((logits.argmax(1) == y).sum())


def test_steps_match_the_reference_bit_for_bit_with_dropout():
    cfg = _config()
    trainer, again = Fp32Trainer(cfg, "cpu"), Fp32Trainer(cfg, "cpu")
    torch.manual_seed(cfg.seed)
    net = SpecNet(cfg.model)
    o = cfg.fp32
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    rng = np.random.default_rng(5)
    test_images, test_labels = _batch(rng, 30)
    for step in range(4):
        images, labels = _batch(rng, cfg.batch)
        expected = _reference_step(net, opt, cfg.seed, step, images, labels)
        assert trainer.train_batch(images, labels, 0, step) == expected
        assert again.train_batch(images, labels, 0, step) == expected
        if step == 1:  # an evaluation between steps leaves the next step unchanged
            trainer.evaluate(test_images, test_labels)
    for name, p in net.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], p), name
        assert torch.equal(again.model.state_dict()[name], p), name


def test_evaluate_counts_every_test_image():
    cfg = _config()
    trainer = Fp32Trainer(cfg, "cpu")
    images, labels = _batch(np.random.default_rng(2), 30)  # eval_batch 7: four slices and a remainder of 2
    m, e = to_int8(images)
    with torch.no_grad():
        trainer.model.eval()
        pred = trainer.model(torch.from_numpy(np.ldexp(m.astype(np.float32), e))).argmax(1).numpy()
    assert trainer.evaluate(images, labels) == int((pred == labels).sum())
    assert trainer.model.training is False


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (3, 1, 1), (2, 2, 1), (3, 2, 2)])  # (3, 2, 2): wider than torch pads
def test_twin_pool_pads_with_minus_infinity_as_the_integer_pool(k, s, p):
    """The float twin's padded max pool on integer values equals the numpy reference's (all-negative
    inputs: a zero border would win)."""
    from nitisim.contract.executor import StepContext
    from nitisim.contract.graph import Node
    from nitisim.contract.numerics import QTensor
    from nitisim.contract.reference import ReferenceOps
    from nitisim.train.fp32 import _max_pool

    x = np.random.default_rng(k + s + p).integers(-127, -100, (2, 7, 8, 3)).astype(np.int8)
    node = Node("pool", "maxpool", "forward", "pool", (), (), (("kernel", k), ("padding", p), ("stride", s)), 1)
    (want,) = ReferenceOps.maxpool(node, StepContext(), QTensor(x, 0))
    got = _max_pool(MaxPool(k, s, p))(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2))
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), want)
