"""ResNets as DAGs: YAML residual blocks and their errors, shapes, the fan-in error sums of the
backward graph, chain-model graphs unchanged, zero-initialised branches, and numpy training steps."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from nitisim.contract.errors import UserInputError
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import (Add, Conv, GlobalAvgPool, MaxPool, ModelSpec, builtin_models,
                                     infer_shapes, layer_inputs, layer_names, load_model, model_as_dict,
                                     model_from_dict, parse_model)
from nitisim.contract.numerics import QTensor
from nitisim.contract.ops import OPS
from nitisim.contract.reference import REFERENCE_KERNELS

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "models"
HAS_AVGPOOL = "global_avgpool" in OPS and "global_avgpool_grad" in OPS
needs_avgpool = pytest.mark.skipif(not HAS_AVGPOOL, reason="op global_avgpool / global_avgpool_grad not in "
                                   "contract.ops yet (helper avgpool, issue 25)")


def _reference_pool_pads() -> bool:
    """Whether the numpy maxpool reads attr padding (a 3x3 input, kernel 3, stride 2, padding 1 -> 2x2)."""
    from nitisim.contract.graph import Node
    node = Node("p", "maxpool", "forward", "p", ("x",), ("y",), (("kernel", 3), ("padding", 1), ("stride", 2)))
    x = QTensor(np.arange(9, dtype=np.int8).reshape(1, 3, 3, 1), -7)
    try:
        (y,) = REFERENCE_KERNELS["maxpool"](node, StepContext(), x)
    except Exception:  # noqa: BLE001 - any failure means: not there yet
        return False
    return np.asarray(y.m).shape == (1, 2, 2, 1)


needs_padded_pool = pytest.mark.skipif(not _reference_pool_pads(), reason="the numpy maxpool has no padding attr "
                                       "yet (helper padpool, issue 25)")

# A tiny ResNet: stem, one block with an identity shortcut, one with a strided 1x1 conv shortcut.
TINY = """
name: tiny-resnet
input: [8, 8, 2]
classes: 10
layers:
  - conv: {out: 4, kernel: 3, padding: 1}
  - relu
  - residual: {branch: [conv: {out: 4, kernel: 3, padding: 1}, relu, conv: {out: 4, kernel: 3, padding: 1}],
               shortcut: identity, then: relu}
  - residual:
      branch: [conv: {out: 8, kernel: 3, stride: 2, padding: 1}, relu, conv: {out: 8, kernel: 3, padding: 1}]
      shortcut: {conv: {out: 8, kernel: 1, stride: 2}}
      then: relu
  - flatten
  - linear: {out: 10}
"""


def tiny(tmp_path, text=TINY):
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return load_model(path)


def test_residual_blocks_expand_into_plain_layers(tmp_path):
    model = tiny(tmp_path)
    names = layer_names(model)
    assert names == ["conv1", "relu1", "conv2", "relu2", "conv3", "add1", "relu3",
                     "conv4", "relu4", "conv5", "conv6", "add2", "relu5", "flatten1", "fc1"]
    reads = [[names[j] if j >= 0 else "input" for j in r] for r in layer_inputs(model)]
    assert reads[5] == ["conv3", "relu1"]  # identity: the branch end and the block input
    assert reads[10] == ["relu3"] and reads[11] == ["conv5", "conv6"]  # the shortcut conv reads the block input
    assert reads[7] == ["relu3"]
    assert model.layers[10] == Conv(8, 1, 2)  # the shortcut starts as Xavier
    assert model.layers[4].init == "zero" and model.layers[9].init == "zero"  # each branch's last conv
    assert [layer.init for layer in model.layers if isinstance(layer, Conv)].count("zero") == 2
    shapes = infer_shapes(model, 2)
    assert shapes[1 + 11] == (2, 4, 4, 8) and shapes[-1] == (2, 10)


def test_named_layers_and_explicit_inputs(tmp_path):
    model = tiny(tmp_path, """
input: [4, 4, 1]
layers:
  - conv: {out: 2, kernel: 3, padding: 1, name: stem}
  - relu: {name: act}
  - conv: {out: 2, kernel: 1, init: zero}
  - add: {inputs: [conv2, act], name: sum}
  - global_avgpool
  - linear: {out: 10}
""")
    assert layer_names(model) == ["stem", "act", "conv2", "sum", "avgpool1", "fc1"]
    assert model.layers[4] == GlobalAvgPool() and model.layers[3] == Add()
    assert model_from_dict(json.loads(json.dumps(model_as_dict(model)))) == model


@pytest.mark.parametrize("edit,field", [
    (lambda t: t.replace("shortcut: identity", "shortcut: maybe"), "layers[2].residual.shortcut"),
    (lambda t: t.replace("shortcut: {conv: {out: 8, kernel: 1, stride: 2}}", "shortcut: {conv: {out: 7, kernel: 1, "
                         "stride: 2}}"), "layers[3].residual"),  # add operands (2, 4, 4, 8) and (2, 4, 4, 7)
    (lambda t: t.replace("shortcut: {conv: {out: 8, kernel: 1, stride: 2}}", "shortcut: identity"),
     "layers[3].residual"),  # an identity shortcut where the shape changes
    (lambda t: t.replace("then: relu\n  - flatten", "then: gelu\n  - flatten"), "layers[3].residual.then"),
    (lambda t: t.replace("branch: [conv: {out: 4, kernel: 3, padding: 1}, relu, conv: {out: 4, kernel: 3, "
                         "padding: 1}]", "branch: [relu]"), "layers[2].residual.branch"),
    (lambda t: t.replace("shortcut: identity, then", "shortcut: identity, than"), "layers[2].residual.than"),
    (lambda t: t.replace("kernel: 1, stride: 2}}", "kernel: 1, stride: 2, inputs: [conv1]}}"),
     "layers[3].residual.shortcut.conv.inputs"),
    (lambda t: t.replace("  - flatten", "  - add: {inputs: [relu5, nowhere]}\n  - flatten"),
     "layers[4].add.inputs[1]"),
    (lambda t: t.replace("  - flatten", "  - add: {inputs: [relu5]}\n  - flatten"), "layers[4].add.inputs"),
    (lambda t: t.replace("  - flatten", "  - add\n  - flatten"), "layers[4].add.inputs"),
    (lambda t: t.replace("  - flatten", "  - relu: {name: conv1}\n  - flatten"), "layers[4]"),
    (lambda t: t.replace("  - flatten", "  - relu: {name: a.b}\n  - flatten"), "layers[4].relu.name"),
    (lambda t: t.replace("  - flatten", "  - relu: {inputs: [relu3]}\n  - flatten"), "layers[3].residual.then"),
    (lambda t: t.replace("out: 4, kernel: 3, padding: 1}]", "out: 4, kernel: 3, padding: 1, init: ones}]"),
     "layers[2].residual.branch[2].conv.init"),
    (lambda t: t.replace("  - flatten", "  - maxpool: {kernel: 2, padding: 2}\n  - flatten"), "layers[4]"),
    (lambda t: t.replace("  - linear", "  - global_avgpool\n  - linear"), "layers[5]"),  # on (N, F)
])
def test_bad_residual_models(tmp_path, edit, field):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(TINY))
    with pytest.raises(UserInputError) as err:
        load_model(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}:"), message
    assert "\n" not in message


def test_unread_layer_is_refused():
    with pytest.raises(UserInputError, match="never read"):
        parse_model({"input": [4, 4, 1], "layers": [
            {"conv": {"out": 2, "kernel": 1, "name": "a"}}, {"conv": {"out": 2, "kernel": 1, "inputs": ["input"]}},
            "flatten", {"linear": {"out": 10}}]}, "m.yaml")


def fingerprint(graph):
    rows = [(n.name, n.op, n.phase, n.layer, n.inputs, n.outputs, n.attrs, n.tensor_id) for n in graph.nodes]
    rows.append(sorted((t.name, t.shape, t.dtype, t.role) for t in graph.tensors.values()))
    rows.append((graph.weights, graph.states, graph.logits_name))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


# build_graph(model, 8, ...) of every chain model, captured on main before models became DAGs.
CHAIN_GRAPHS = {
    'mlp|train|plain': '985a551bd86b753a',
    'mlp|train|momentum': '7fb81943bb68fa45',
    'mlp|infer|plain': '2a14e5a16634de88',
    'mlp|infer|momentum': '4adc668a42dbdfbb',
    'lenet|train|plain': '7292bb27aee58162',
    'lenet|train|momentum': '773d1391bc7af6f6',
    'lenet|infer|plain': '8f6c67b87af7bd80',
    'lenet|infer|momentum': 'fcde2fbddb9932f2',
    'vgg-small-7|train|plain': '0b42ea3028f63b68',
    'vgg-small-7|train|momentum': '1e9b920a545df19f',
    'vgg-small-7|infer|plain': '49e40b10c761ec2a',
    'vgg-small-7|infer|momentum': '97b35cf9837a8652',
    'vgg-small-8|train|plain': 'a654ff18dc2e891f',
    'vgg-small-8|train|momentum': '59f7c6cec418f812',
    'vgg-small-8|infer|plain': 'fc19ca31109d2652',
    'vgg-small-8|infer|momentum': 'c409896a6400a51f',
    'vgg-small-9|train|plain': '79160a1eaf02dd2d',
    'vgg-small-9|train|momentum': '11703c41786044e7',
    'vgg-small-9|infer|plain': '3fcf8d55e5afef17',
    'vgg-small-9|infer|momentum': '0b035567dcf466da',
    'vgg11|train|plain': 'c8ace80a86eb2c11',
    'vgg11|train|momentum': '054018aa29f50ff0',
    'vgg11|infer|plain': '6fb4e3cb6e85c81f',
    'vgg11|infer|momentum': '7be958d8f723bf35',
    'vgg13|train|plain': 'e9bc25833c60a26c',
    'vgg13|train|momentum': '623ea9c13cfe1b76',
    'vgg13|infer|plain': '0e632b68e89f855c',
    'vgg13|infer|momentum': '32bb941394bacc62',
    'vgg-small-fmnist-wide.yaml|train|plain': 'aad0438fbfed28a4',
    'vgg-small-fmnist-wide.yaml|train|momentum': '13bf01224079083a',
    'vgg-small-fmnist-wide.yaml|infer|plain': 'ec3d55d9f3931327',
    'vgg-small-fmnist-wide.yaml|infer|momentum': '02f99ab7d3feb063',
    'vgg-small-fmnist.yaml|train|plain': 'e99373b403e9f1af',
    'vgg-small-fmnist.yaml|train|momentum': 'a7ec657b5ed00e35',
    'vgg-small-fmnist.yaml|infer|plain': '70852f2923d6342e',
    'vgg-small-fmnist.yaml|infer|momentum': 'cf315891608ffa64',
}
# sha256 of json.dumps(model_to_dict(model), sort_keys=True): the step hash's model part, as on main.
CHAIN_DICTS = {
    'mlp': 'a8adf84cd7d6fc1b', 'lenet': '489cf479ce84a0e2', 'vgg-small-7': '43258d12bc147bb9',
    'vgg-small-8': 'ae608fb9be049a36', 'vgg-small-9': 'edce50301b841cd4', 'vgg11': '43993739c82eae19',
    'vgg13': '367798c3d16afcb9', 'vgg-small-fmnist-wide.yaml': '599d0838f68f2c27',
    'vgg-small-fmnist.yaml': 'ec5c5ff71600c992',
}
CHAIN_INITS = {'mlp': '11a34f578a2f9bb7', 'lenet': '35edea1e4b3423c4', 'vgg-small-fmnist.yaml': 'f347cbeaa88859a9'}


def chain_models():
    models = {k: v for k, v in builtin_models().items() if not k.startswith("resnet")}
    models.update({p.name: load_model(p) for p in sorted(CONFIGS.glob("vgg*.yaml"))})
    return models


def test_chain_model_graphs_unchanged():
    models = chain_models()
    assert {k.split("|")[0] for k in CHAIN_GRAPHS} == set(models)
    plain = NumericsOptions()
    other = NumericsOptions(activation_rounding="nearest", error_rounding="stochastic", update_rule="momentum")
    for key, want in CHAIN_GRAPHS.items():
        name, mode, rule = key.split("|")
        graph = build_graph(models[name], 8, plain if rule == "plain" else other, training=(mode == "train"))
        assert fingerprint(graph) == want, key
        assert not graph.nodes_of("add")


def test_chain_model_dicts_and_inits_unchanged():
    from nitisim.train.config import model_to_dict
    models = chain_models()
    for name, want in CHAIN_DICTS.items():
        got = hashlib.sha256(json.dumps(model_to_dict(models[name]), sort_keys=True).encode()).hexdigest()[:16]
        assert got == want, name
        assert model_from_dict(model_to_dict(models[name])) == models[name]
    for name, want in CHAIN_INITS.items():
        params = init_params(build_graph(models[name], 2), seed=3)
        h = hashlib.sha256()
        for k in sorted(params):
            h.update(k.encode()), h.update(params[k].m.tobytes()), h.update(str(params[k].e).encode())
        assert h.hexdigest()[:16] == want, name


def test_fan_in_errors_are_summed_with_add_nodes(tmp_path):
    opts = NumericsOptions(activation_rounding="nearest", error_rounding="stochastic")
    g = build_graph(tiny(tmp_path), 2, opts)
    by_name = {n.name: n for n in g.nodes}
    # relu1.out feeds conv2 and add1; relu3.out feeds conv4 and the shortcut conv6.
    s1, s3 = by_name["relu1.grad_sum1"], by_name["relu3.grad_sum1"]
    assert s1.op == s3.op == "add" and s1.phase == "backward" and s1.attr("mode") == "stochastic"
    assert s1.outputs == ("relu1.out.grad",) and s3.outputs == ("relu3.out.grad",)
    # add1's error passes unchanged to both operands: relu1's sum reads add1.out's error directly.
    assert set(s1.inputs) == {"add1.out.grad", "relu1.out.grad.conv2"}
    assert set(s3.inputs) == {"relu3.out.grad.conv4", "relu3.out.grad.conv6"}
    assert by_name["conv3.w_grad"].inputs == ("relu2.out", "add1.out.grad")
    assert by_name["conv5.w_grad"].inputs[1] == by_name["conv6.w_grad"].inputs[1] == "add2.out.grad"
    assert by_name["add1.fwd"].attr("mode") == "nearest" and by_name["add1.fwd"].phase == "forward"
    assert len(g.nodes_of("add")) == 4 and not [n for n in g.nodes if n.layer.startswith("add") and n.phase != "forward"]
    # The stem conv's input is data: no error for x, none below conv1.
    assert "conv1.in_grad" not in by_name and "x.grad" not in g.tensors
    # Execution order: every input is made before it is read, and every error sum after all its parts.
    made = {"x", "labels", *g.weights}
    for node in g.nodes:
        assert set(node.inputs) <= made, node.name
        made.update(node.outputs)
    # The strided 1x1 shortcut's backward is an ordinary conv's.
    sc = by_name["conv6.in_grad"]
    assert sc.attr("stride") == 2 and sc.attr("input_shape") == (2, 8, 8, 4) and sc.attr("padding") == 0


def test_executor_frees_fan_out_tensors_after_their_last_reader(tmp_path):
    g = build_graph(tiny(tmp_path), 2)
    last = g.last_uses()
    readers = [i for i, n in enumerate(g.nodes) if "relu1.out" in n.inputs]
    assert len(readers) == 3 and last["relu1.out"] == max(readers)  # conv2.fwd, add1.fwd, conv2.w_grad
    seen = []

    def watch(fn):
        def run(node, ctx, *args):
            seen.append((node.name, "relu1.out" in env))
            return fn(node, ctx, *args)
        return run
    params = init_params(g, seed=0)
    rng = np.random.default_rng(0)
    env = dict(params)
    env["x"] = QTensor(rng.integers(-127, 128, (2, 8, 8, 2)).astype(np.int8), -8)
    env["labels"] = rng.integers(0, 10, 2).astype(np.int32)
    from nitisim.contract.executor import run_graph
    run_graph(g, {k: watch(v) for k, v in REFERENCE_KERNELS.items()}, env, StepContext(seed=1, mu=3))
    names = [n.name for n in g.nodes]
    alive = dict(seen)
    assert all(alive[names[i]] for i in readers)  # present at every read
    assert "relu1.out" not in env  # and freed after the last


def _step(model, batch=4, steps=3, opts=None):
    g = build_graph(model, batch, opts)
    params = init_params(g, seed=0)
    rng = np.random.default_rng(7)
    x = QTensor(rng.integers(-127, 128, (batch, *model.input_shape)).astype(np.int8), -8)
    labels = rng.integers(0, model.classes, batch).astype(np.int32)
    history = [params]
    for step in range(steps):
        result = train_step(g, REFERENCE_KERNELS, history[-1], x, labels, StepContext(seed=5, step=step, mu=3),
                            keep=[g.logits_name])
        history.append(result.params)
    return g, history


@pytest.mark.parametrize("rule", ["plain", "momentum", "shadow16"])
def test_tiny_resnet_trains_on_numpy(tmp_path, rule):
    g, history = _step(tiny(tmp_path), opts=NumericsOptions(update_rule=rule))
    first, last = history[0], history[-1]
    # The zero-initialised branch ends start at zero and move: the error reaches them through the add.
    for w in ("conv3.w", "conv5.w"):
        assert not first[w].m.any() and last[w].m.any(), w
        assert last[w].e == first[w].e
    for w in g.weights:
        assert last[w].m.dtype == np.int8 and not np.array_equal(first[w].m, last[w].m), w


def test_zero_init_keeps_the_xavier_exponent_and_other_layers(tmp_path):
    model = tiny(tmp_path)
    plain = ModelSpec(model.name, model.input_shape,
                      tuple(Conv(l.out_channels, l.kernel, l.stride, l.padding) if isinstance(l, Conv) else l
                            for l in model.layers), model.classes, model.names, model.inputs)
    a, b = init_params(build_graph(model, 2), seed=4), init_params(build_graph(plain, 2), seed=4)
    for w in a:
        assert a[w].e == b[w].e
        assert np.array_equal(a[w].m, b[w].m) == (w not in ("conv3.w", "conv5.w")), w
    assert b["conv3.w"].m.any()


RESNET_FORWARD_MACS = {  # per image
    # stem 32*32*27*16; per stage s, 3 blocks of two 3x3 convs; strided 1x1 shortcuts at stages 2, 3; fc 64*10
    "resnet-20": 32 * 32 * 27 * 16 + 6 * 32 * 32 * 9 * 16 * 16
    + (16 * 16 * 9 * 16 * 32 + 5 * 16 * 16 * 9 * 32 * 32 + 16 * 16 * 16 * 32)
    + (8 * 8 * 9 * 32 * 64 + 5 * 8 * 8 * 9 * 64 * 64 + 8 * 8 * 32 * 64) + 64 * 10,
}


def test_resnet_structure_and_macs():
    models = builtin_models()
    r20, r18, r50 = models["resnet-20"], models["resnet-18"], models["resnet-50"]
    kinds = lambda m, cls: sum(isinstance(l, cls) for l in m.layers)  # noqa: E731
    assert kinds(r20, Add) == 9 and kinds(r20, Conv) == 19 + 2
    assert kinds(r18, Add) == 8 and kinds(r18, Conv) == 17 + 3
    assert kinds(r50, Add) == 16 and kinds(r50, Conv) == 49 + 4
    assert r18.layers[2] == MaxPool(3, 2, 1)
    assert infer_shapes(r18, 1)[3] == (1, 56, 56, 64) and infer_shapes(r50, 1)[-2] == (1, 2048)
    assert infer_shapes(models["resnet-20-28"], 1)[-2] == (1, 64)
    for m in (r20, r18, r50):
        assert sum(isinstance(l, Conv) and l.init == "zero" for l in m.layers) == kinds(m, Add)


@needs_avgpool
def test_resnet_graphs_and_macs():
    models = builtin_models()
    g = build_graph(models["resnet-20"], 1)
    assert g.macs("forward") == RESNET_FORWARD_MACS["resnet-20"]
    assert len(g.nodes_of("add")) == 9 + 9  # 9 forward shortcut sums, 9 backward error sums
    fwd = {name: build_graph(models[name], 1, training=False).macs("forward") for name in ("resnet-18", "resnet-50")}
    assert 1.80e9 < fwd["resnet-18"] < 1.83e9 and 4.08e9 < fwd["resnet-50"] < 4.12e9, fwd
    gap = g.nodes_of("global_avgpool_grad")[0]
    assert gap.attr("input_shape") == (1, 8, 8, 64) and gap.attr("exp_shift") == -6
    g28 = build_graph(models["resnet-20-28"], 1)
    assert g28.nodes_of("global_avgpool_grad")[0].attr("exp_shift") == -5  # 7x7 = 49: floor(log2 49) = 5


@needs_avgpool
def test_resnet_yaml_matches_builtin():
    models = builtin_models()
    for name in ("resnet-20", "resnet-20-28", "resnet-18", "resnet-50"):
        assert load_model(CONFIGS / f"{name}.yaml") == models[name], name


@needs_avgpool
def test_tiny_resnet_with_global_avgpool_trains_on_numpy(tmp_path):
    model = tiny(tmp_path, TINY.replace("  - flatten\n", "  - global_avgpool\n"))
    g, history = _step(model)
    assert g.nodes_of("global_avgpool_grad")
    assert not np.array_equal(history[0]["conv1.w"].m, history[-1]["conv1.w"].m)


@needs_padded_pool
def test_padded_maxpool_stem_trains_on_numpy(tmp_path):
    model = tiny(tmp_path, TINY.replace("  - relu\n  - residual", "  - relu\n  - maxpool: {kernel: 3, stride: 2, "
                                                                   "padding: 1}\n  - residual", 1))
    g, history = _step(model)
    pool = g.nodes_of("maxpool")[0]
    assert pool.attr("padding") == 1 and g.nodes_of("maxpool_grad")[0].attr("padding") == 1
    assert not np.array_equal(history[0]["conv1.w"].m, history[-1]["conv1.w"].m)
