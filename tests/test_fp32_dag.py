"""The float32 twin of a DAG model (ResNets) against hand-written torch, chain twins against the
nn.Sequential they were, the batch-norm ceiling option, and the memory estimate of a DAG."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from nitisim.contract.errors import UserInputError  # noqa: E402
from nitisim.contract.models import (Conv, Dropout, Flatten, Linear, MaxPool, ReLU, builtin_models,  # noqa: E402
                                     infer_shapes, parse_model)
from nitisim.memory_estimate import training_estimate  # noqa: E402
from nitisim.train.config import load_config  # noqa: E402
from nitisim.train.fp32 import Fp32Trainer, NchwToNhwcFlatten, SpecNet  # noqa: E402

SYNTHETIC = Path(__file__).resolve().parents[1] / "configs" / "train" / "synthetic-mlp.yaml"

# stem (conv, padded 3x3/2 max pool), an identity block, a block with a strided 1x1 shortcut
TINY_RESNET = parse_model({
    "name": "tiny-resnet", "input": [8, 8, 3], "classes": 10,
    "layers": [
        {"conv": {"out": 4, "kernel": 3, "padding": 1}}, "relu",          # 0 1
        {"maxpool": {"kernel": 3, "stride": 2, "padding": 1}},            # 2: 8x8 -> 4x4
        {"residual": {"branch": [{"conv": {"out": 4, "kernel": 3, "padding": 1}}, "relu",   # 3 4
                                 {"conv": {"out": 4, "kernel": 3, "padding": 1}}],          # 5 (zero), add 6
                      "then": "relu"}},                                                     # 7
        {"residual": {"branch": [{"conv": {"out": 8, "kernel": 3, "stride": 2, "padding": 1}}, "relu",  # 8 9
                                 {"conv": {"out": 8, "kernel": 3, "padding": 1}}],                       # 10 (zero)
                      "shortcut": {"conv": {"out": 8, "kernel": 1, "stride": 2}},                        # 11, add 12
                      "then": "relu"}},                                                                  # 13
        "global_avgpool", {"linear": {"out": 10}},                        # 14 15
    ]}, "tiny-resnet.yaml")
CONVS = (0, 3, 5, 8, 10, 11)
ZERO = (5, 10)


def _reference(w, x):
    """TINY_RESNET's forward written out by hand; w[i] is layer i's weight, x (N, H, W, C)."""
    h = F.relu(F.conv2d(x.permute(0, 3, 1, 2), w[0], padding=1))
    h = F.max_pool2d(h, 3, 2, 1)
    h = F.relu(F.conv2d(F.relu(F.conv2d(h, w[3], padding=1)), w[5], padding=1) + h)
    branch = F.conv2d(F.relu(F.conv2d(h, w[8], stride=2, padding=1)), w[10], padding=1)
    h = F.relu(branch + F.conv2d(h, w[11], stride=2))
    return h.mean(dim=(2, 3)) @ w[15].T


def test_tiny_resnet_twin_matches_a_hand_written_forward():
    net = SpecNet(TINY_RESNET)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():  # nonzero everywhere, so the zero-init convs take part too
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    x = torch.randn(5, 8, 8, 3, generator=gen)
    w = {i: net.body[i].weight for i in (*CONVS, 15)}
    assert net.body[11].weight.shape == (8, 4, 1, 1)  # the shortcut reads the block input (4 channels)
    got, want = net(x), _reference(w, x)
    assert got.shape == (5, 10)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    got.sum().backward()  # every weight, the shortcut's included, gets a gradient through the DAG
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_zero_init_convs_start_at_zero_and_leave_the_other_draws_alone():
    torch.manual_seed(7)
    net = SpecNet(TINY_RESNET)
    plain = dataclasses.replace(TINY_RESNET, layers=tuple(
        dataclasses.replace(layer, init="xavier") if isinstance(layer, Conv) else layer
        for layer in TINY_RESNET.layers))
    torch.manual_seed(7)
    xavier = SpecNet(plain)
    for i in (*CONVS, 15):
        if i in ZERO:
            assert torch.count_nonzero(net.body[i].weight) == 0
            assert torch.count_nonzero(xavier.body[i].weight) > 0
        else:
            assert torch.equal(net.body[i].weight, xavier.body[i].weight)
    x = torch.randn(4, 8, 8, 3)
    logits = net(x)  # each block starts as its shortcut: its branch adds nothing
    h = F.max_pool2d(F.relu(F.conv2d(x.permute(0, 3, 1, 2), net.body[0].weight, padding=1)), 3, 2, 1)
    h = F.relu(F.conv2d(F.relu(h), net.body[11].weight, stride=2))
    assert torch.allclose(logits, h.mean(dim=(2, 3)) @ net.body[15].weight.T, rtol=1e-5, atol=1e-6)


def test_batch_norm_follows_every_conv_and_the_twin_trains():
    torch.manual_seed(0)
    net = SpecNet(TINY_RESNET, batch_norm=True)
    assert sorted(int(k) for k in net.norms) == list(CONVS)
    assert all(isinstance(m, nn.BatchNorm2d) for m in net.norms.values())
    for i in CONVS:  # zero init moves to the norm's scale: a norm of an all-zero map divides by sqrt(eps)
        assert torch.count_nonzero(net.body[i].weight) > 0
        assert torch.count_nonzero(net.norms[str(i)].weight) == (0 if i in ZERO else net.body[i].out_channels)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, 8, 3, generator=gen)
    y = torch.randint(0, 10, (32,), generator=gen)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # it fits one batch
    assert torch.count_nonzero(net.norms["5"].weight) > 0  # the zero scale learns
    assert not torch.equal(net.norms["0"].running_mean, torch.zeros(4))
    net.eval()
    a = net(x[:3])
    assert torch.equal(a, net(x[:3]))  # eval reads the running statistics, not the batch


def _old_sequential(spec):
    """The float twin as it was before DAGs: an nn.Sequential named body, Xavier over self.modules()."""
    shapes = infer_shapes(spec, 1)
    layers = []
    for layer, in_shape in zip(spec.layers, shapes):
        if isinstance(layer, Conv):
            layers.append(nn.Conv2d(in_shape[3], layer.out_channels, layer.kernel, layer.stride, layer.padding,
                                    bias=False))
        elif isinstance(layer, Linear):
            layers.append(nn.Linear(in_shape[1], layer.out_features, bias=False))
        elif isinstance(layer, ReLU):
            layers.append(nn.ReLU())
        elif isinstance(layer, MaxPool):
            layers.append(nn.MaxPool2d(layer.kernel, layer.stride))
        elif isinstance(layer, Flatten):
            layers.append(NchwToNhwcFlatten())
        elif isinstance(layer, Dropout):
            layers.append(nn.Dropout(layer.rate))
    old = nn.Module()
    old.body = nn.Sequential(*layers)
    for m in old.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
    return old


@pytest.mark.parametrize("name", ["mlp", "lenet", "vgg-small-7"])
def test_chain_twins_equal_the_old_sequential(name):
    spec = builtin_models()[name]
    torch.manual_seed(11)
    old = _old_sequential(spec)
    torch.manual_seed(11)
    new = SpecNet(spec)
    assert [(k, v.shape) for k, v in new.state_dict().items()] == [(k, v.shape) for k, v in old.state_dict().items()]
    assert [k for k, _ in new.named_parameters()] == [k for k, _ in old.named_parameters()]
    for k, v in new.state_dict().items():
        assert torch.equal(v, old.state_dict()[k]), k  # the same init draws
    x = torch.randn(2, *spec.input_shape)
    for mode in ("eval", "train"):  # train: dropout draws the same masks in the same order
        getattr(new, mode)(), getattr(old, mode)()
        torch.manual_seed(5)
        a = new(x)
        torch.manual_seed(5)
        assert torch.equal(a, old.body(x.permute(0, 3, 1, 2)))


# a residual net the integer graph builder can expand on this tree (the trainer builds it for its MAC
# counts): the global average pool's op lands separately, so the head here is flatten + linear
RESIDUAL_YAML = """\
input: [28, 28, 1]
layers:
  - conv: {out: 4, kernel: 3, padding: 1}
  - relu
  - maxpool: {kernel: 3, stride: 2, padding: 1}
  - residual: {branch: [conv: {out: 4, kernel: 3, padding: 1}, relu, conv: {out: 4, kernel: 3, padding: 1}],
               then: relu}
  - residual: {branch: [conv: {out: 8, kernel: 3, stride: 2, padding: 1}, relu, conv: {out: 8, kernel: 3, padding: 1}],
               shortcut: {conv: {out: 8, kernel: 1, stride: 2}}, then: relu}
  - flatten
  - linear: {out: 10}
"""


def _write(tmp_path, fp32_extra: str) -> Path:
    (tmp_path / "residual.yaml").write_text(RESIDUAL_YAML)
    text = SYNTHETIC.read_text().replace("model: mlp", "model: residual.yaml")
    text = text.replace("  lr_schedule: {kind: constant}", "  lr_schedule: {kind: constant}\n" + fp32_extra)
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_batch_norm_option_is_read_strictly_and_hashed_only_when_on(tmp_path):
    base = load_config(SYNTHETIC)
    off = load_config(_write(tmp_path, "  batch_norm: false\n"))
    on = load_config(_write(tmp_path, "  batch_norm: true\n"))
    assert not base.fp32.batch_norm and not off.fp32.batch_norm and on.fp32.batch_norm
    assert "batch_norm" not in base.to_dict()["fp32"] and "batch_norm" not in off.to_dict()["fp32"]
    assert on.to_dict()["fp32"]["batch_norm"] is True
    assert off.step_hash("fp32") == dataclasses.replace(off, fp32=base.fp32).step_hash("fp32")
    assert on.step_hash("fp32") != off.step_hash("fp32")
    assert on.step_hash("int8") == off.step_hash("int8")  # the integer run never reads it
    with pytest.raises(UserInputError) as err:
        load_config(_write(tmp_path, "  batch_norm: yes please\n"))
    assert "cfg.yaml" in str(err.value) and "fp32.batch_norm" in str(err.value)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_trainer_trains_a_resnet_twin(tmp_path, batch_norm):
    cfg = load_config(_write(tmp_path, f"  batch_norm: {str(batch_norm).lower()}\n"))
    cfg = dataclasses.replace(cfg, batch=8, eval_batch=8)
    trainer = Fp32Trainer(cfg, "cpu", threads=1)
    assert hasattr(trainer.model, "norms") == batch_norm
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 8)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for step in range(2):
        trainer.train_batch(images, labels, 0, step)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("body.") for k in changed)
    assert any(k.startswith("norms.") for k in changed) == batch_norm
    assert 0 <= trainer.evaluate(images, labels) <= 8
    path = tmp_path / "ck.pt"
    trainer.save(path, {"epoch": 0})
    again = Fp32Trainer(cfg, "cpu", threads=1)
    again.load(path)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in again.model.state_dict().items())


def test_memory_estimate_follows_the_wiring():
    # the fp32 estimate's weights are the twin's parameters, shortcut convs (which read the block input) included
    net = SpecNet(TINY_RESNET)
    assert training_estimate(TINY_RESNET, 4, "fp32").weights_bytes == 12 * sum(p.numel() for p in net.parameters())
    spec = builtin_models()["resnet-18"]
    for arith, element in (("int8", 1), ("fp32", 4)):
        est = training_estimate(spec, 64, arith, "momentum")
        weights = est.weights_bytes // (5 if arith == "int8" else 12)
        assert weights == 11_678_912  # torchvision's 11,689,512 less batch norm (9,600) and the fc bias (1,000)
        # the largest fan-out: the stem's pooled 64x56x56 map, read by block 1's first conv and its add
        assert est.fanout_bytes == element * 64 * 56 * 56 * 64
        assert est.total_bytes == est.weights_bytes + est.activations_bytes + est.accumulator_bytes + est.fanout_bytes
        assert est.total_bytes > est.weights_bytes + est.activations_bytes + est.accumulator_bytes
        assert 0.3 * 2**30 < est.total_bytes < 3 * 2**30  # int8 ~0.4 GiB, fp32 ~1.7 GiB at batch 64
    chain = training_estimate(builtin_models()["lenet"], 64, "fp32")
    assert chain.fanout_bytes == 0
