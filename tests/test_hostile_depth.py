"""A 10,000-layer model goes through the contract floor without recursion: the YAML loader, shape
inference, the graph builder and the numpy reference's training step all walk the layers in loops.
Each runs under a recursion limit far below the depth, so a recursive rewrite would fail here."""
import sys
from contextlib import contextmanager

import numpy as np

from nitisim.cli import main
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import resolve_model
from nitisim.contract.numerics import QTensor
from nitisim.contract.reference import REFERENCE_KERNELS
from nitisim.contract.models import infer_shapes

DEPTH = 10_000  # linear + relu pairs


@contextmanager
def shallow_stack(extra_frames: int = 150):
    """Allow only `extra_frames` frames beyond pytest's own: far below one frame per layer."""
    def depth():
        f, n = sys._getframe(), 0
        while f is not None:
            f, n = f.f_back, n + 1
        return n

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth() + extra_frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _deep_yaml(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\ninput: [4, 4, 1]\nclasses: 10\nlayers:\n  - flatten\n"
                    + "  - linear: {out: 16}\n  - relu\n" * DEPTH + "  - linear: {out: 10}\n")
    return path


def test_load_shapes_and_graph_of_a_10000_layer_model_are_iterative(tmp_path):
    path = _deep_yaml(tmp_path)
    with shallow_stack():
        model = resolve_model(str(path))
        shapes = infer_shapes(model, 2)
        graph = build_graph(model, 2)
        last_uses = graph.last_uses()
    assert len(model.layers) == 2 * DEPTH + 2 and shapes[-1] == (2, 10)
    assert len(graph.weights) == DEPTH + 1
    assert graph.macs("forward") == 2 * (16 * 16 + (DEPTH - 1) * 16 * 16 + 16 * 10)
    assert len(last_uses) > 0


def test_reference_training_step_of_a_10000_layer_model(tmp_path):
    model = resolve_model(str(_deep_yaml(tmp_path)))
    graph = build_graph(model, 2)
    params = init_params(graph, 0)
    rng = np.random.default_rng(0)
    x = QTensor(rng.integers(-127, 128, (2, 4, 4, 1), dtype=np.int8), -8)
    with shallow_stack():
        result = train_step(graph, REFERENCE_KERNELS, params, x, np.array([1, 2], np.int32), StepContext(0, 0, 2),
                            keep=(graph.logits_name,))
    assert set(result.params) == set(params)
    assert all(result.params[w].m.dtype == np.int8 for w in graph.weights)
    # 10,000 requantized layers drift the logits' exponent far below -1024, where the C loss kernel
    # clamps it; the reference's integer softmax is exact there (uniform)
    assert result.tensors[graph.logits_name].e < -1024


def test_models_lists_a_10000_layer_model(tmp_path, capsys):
    assert main(["models", str(_deep_yaml(tmp_path)), "--batch", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["deep", "4x4x1", f"{16 * 16 * DEPTH + 160:,}"]


def test_a_deep_models_step_on_the_c_backend_equals_the_reference():
    """Past about 150 requantized layers the logits' exponent drops below -1024; the C loss kernel
    clamps it there (exactly: the softmax is uniform from -32 down) instead of refusing the step."""
    import pytest

    pytest.importorskip("cffi")
    from nitisim.backends import kernel_table
    from gpu_backend.parity import compare_steps
    from nitisim.contract.models import Flatten, Linear, ModelSpec, ReLU

    layers = (Flatten(),) + (Linear(8), ReLU()) * 300 + (Linear(10),)
    graph = build_graph(ModelSpec("deep300", (4, 4, 1), layers), 4)
    logits_e = train_step(graph, REFERENCE_KERNELS, init_params(graph, 0),
                          QTensor(np.full((4, 4, 4, 1), 100, np.int8), -8), np.arange(4, dtype=np.int32),
                          StepContext(0, 0, 2), keep=(graph.logits_name,)).tensors[graph.logits_name].e
    assert logits_e < -1024  # below NITI_LOSS_MIN_EXP: the C loss kernel takes its clamp
    assert compare_steps(graph, REFERENCE_KERNELS, kernel_table("cpu"), steps=2) == []
