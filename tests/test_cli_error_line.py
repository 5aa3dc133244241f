"""The CLI's error line quotes user input, so it is printed safe for a terminal: one line, with NUL
bytes and escape sequences shown as escapes rather than sent to the screen."""
from pathlib import Path

from nitisim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_control_characters_in_an_error_line_are_escaped(tmp_path, capsys):
    config = tmp_path / "evil.yaml"
    text = (ROOT / "configs" / "train" / "synthetic-mlp.yaml").read_text().replace("model: mlp",
                                                                                   'model: "lenet\\0\\e[2J.yaml"')
    config.write_text(text)
    assert main(["train", str(config), "--backend", "numpy", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nitisim: error: ")
    assert "\x00" not in err and "\x1b" not in err
    assert "lenet\\x00\\x1b[2J.yaml" in err
