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
