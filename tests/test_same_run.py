"""benchmarks/same_run.py, the GPU check's end-to-end parity verdict: the same config trained on
two backends gives the same run, and any changed weight or accuracy is reported."""
import json
from pathlib import Path

import pytest

from nitisim.cli import main
from nitisim.train.checkpoint import load_int8, save_int8

from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "configs" / "train" / "synthetic-mlp.yaml"


def _same_run():
    return load_benchmark("same_run")


@pytest.mark.cpu_lib
def test_numpy_and_c_runs_are_the_same_run_and_a_changed_weight_is_found(tmp_path, capsys):
    same_run = _same_run()
    a, b = tmp_path / "numpy", tmp_path / "cpu"
    for backend, out in (("numpy", a), ("cpu", b)):
        assert main(["train", str(SYNTHETIC), "--backend", backend, "--epochs", "1", "--out", str(out)]) == 0
    assert same_run.main([str(a), str(b)]) == 0
    assert "IDENTICAL" in capsys.readouterr().out

    params, meta = load_int8(b / "checkpoint.npz")
    name = sorted(params)[0]
    params[name].m.flat[0] ^= 1  # one bit of one weight
    save_int8(b / "checkpoint.npz", params, meta)
    assert same_run.main([str(a), str(b)]) == 1
    assert f"{name}: 1 of" in capsys.readouterr().out

    lines = (a / "metrics.jsonl").read_text().splitlines()
    changed = json.loads(lines[0])
    changed["test_accuracy"] += 1 / 256
    (a / "metrics.jsonl").write_text(json.dumps(changed) + "\n")
    assert any("accuracies" in d for d in same_run.differences(a, b))
