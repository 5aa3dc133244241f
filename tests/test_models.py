"""Model YAML loading: good files build, bad files give one line naming the file and the field."""
import pytest

from nitisim.cli import main
from nitisim.contract.errors import UserInputError
from nitisim.contract.graph import build_graph
from nitisim.contract.models import Conv, resolve_model

GOOD = """
name: tiny
input: [8, 8, 1]
classes: 10
layers:
  - conv: {out: 4, kernel: 3, padding: 1}
  - relu
  - maxpool: {kernel: 2, stride: 2}
  - flatten
  - dropout: {rate: 0.5}
  - linear: {out: 10}
"""


def test_good_model_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD)
    model = resolve_model(str(path))
    assert model.layers[0] == Conv(4, 3, 1, 1)
    assert build_graph(model, 2).tensor("flatten1.out").shape == (2, 64)


PADDED_POOL = GOOD.replace("maxpool: {kernel: 2, stride: 2}", "maxpool: {kernel: 3, stride: 2, padding: 1}")


@pytest.mark.parametrize("text,field", [
    (GOOD.replace("kernel: 3,", "kernal: 3,"), "layers[0].conv.kernal"),
    (GOOD.replace("out: 4, ", ""), "layers[0].conv.out"),
    (GOOD.replace("- relu", "- gelu"), "layers[1]"),
    (GOOD.replace("kernel: 3,", "kernel: -3,"), "layers[0].conv.kernel"),
    (GOOD.replace("kernel: 3,", "kernel: 30,"), "layers[0]"),
    (GOOD.replace("rate: 0.5", "rate: 0.3"), "layers[4].dropout.rate"),
    (GOOD.replace("input: [8, 8, 1]", "input: [8, 8]"), "input"),
    (GOOD.replace("classes: 10", "classes: 10\nextra: 1"), "extra"),
    (GOOD.replace("  - flatten\n", ""), "layers[4]"),
    (GOOD.replace("linear: {out: 10}", "linear: {out: 7}"), "layers"),
    ("layers: [relu\n", "line"),
    # more than half the kernel (torch's rule): refused where the shapes are inferred, at the layer
    (PADDED_POOL.replace("stride: 2, padding: 1}", "stride: 2, padding: 3}"), "layers[2]: maxpool padding 3"),
    (GOOD.replace("stride: 2}", "stride: 2, padding: 2}"), "layers[2]: maxpool padding 2"),
    (PADDED_POOL.replace("stride: 2, padding: 1}", "stride: 2, padding: -1}"), "layers[2].maxpool.padding"),
    (PADDED_POOL.replace("stride: 2, padding: 1}", "stride: 2, padding: one}"), "layers[2].maxpool.padding"),
])
def test_bad_model_files(tmp_path, capsys, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError) as err:
        resolve_model(str(path))
    assert str(path) in str(err.value) and field in str(err.value)
    assert main(["models", str(path)]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and str(path) in out.err and "Traceback" not in out.err


def test_unknown_model_name(capsys):
    assert main(["models", "resnet-9000"]) == 2
    assert "resnet-9000" in capsys.readouterr().err




def test_padded_maxpool_file(tmp_path):
    """The ResNet stem's pool: 3x3, stride 2, padding 1 (-infinity) halves an even map."""
    from nitisim.contract.models import MaxPool

    path = tmp_path / "padded.yaml"
    path.write_text(PADDED_POOL)
    model = resolve_model(str(path))
    assert model.layers[2] == MaxPool(3, 2, 1)
    g = build_graph(model, 2)
    assert g.tensor("pool1.out").shape == (2, 4, 4, 4) and g.tensor("flatten1.out").shape == (2, 64)
    assert all(n.attr("padding") == 1 for n in g.nodes if n.op in ("maxpool", "maxpool_grad"))


def test_padding_over_half_the_kernel_is_refused_by_shape_inference():
    """A spec built in code, not read from YAML, meets the same rule where its shapes are inferred."""
    from nitisim.contract.models import Flatten, Linear, MaxPool, ModelSpec, infer_shapes

    with pytest.raises(UserInputError, match=r"layers\[1\].*padding 2 is more than half its kernel 2"):
        infer_shapes(ModelSpec("m", (8, 8, 1), (Conv(2, 1), MaxPool(2, 2, 2), Flatten(), Linear(10))), 1)


def test_config_echo_names_a_pool_padding_only_when_set():
    """The run echo (and the step hash its checkpoints carry) of a model without a padded pool is
    what it was before pools could pad."""
    from nitisim.contract.models import ModelSpec, MaxPool, builtin_models
    from nitisim.train.config import model_to_dict

    pools = [fields for kind, fields in model_to_dict(builtin_models()["lenet"])["layers"] if kind == "maxpool"]
    assert pools == [{"kernel": 2, "stride": 2}] * 2
    padded = model_to_dict(ModelSpec("p", (8, 8, 1), (MaxPool(3, 2, 1),)))
    assert padded["layers"] == [["maxpool", {"kernel": 3, "stride": 2, "padding": 1}]]
