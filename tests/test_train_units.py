"""Training building blocks: checkpoint round trip and crash safety, the progress line, weight headroom."""
import io
import os

import numpy as np
import pytest

from nitisim.contract.errors import UserInputError
from nitisim.contract.numerics import QTensor
from nitisim.train import checkpoint
from nitisim.train.progress import Progress


def _params(value: int):
    return {"fc1.w": QTensor(np.full((3, 4), value, np.int8), -9),
            "fc1.w.velocity": QTensor(np.arange(12, dtype=np.int32).reshape(3, 4) * value, -9)}


def test_round_trip(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_int8(path, _params(5), {"epoch": 3, "step": 40, "config_hash": "abc"})
    params, meta = checkpoint.load_int8(path)
    assert meta["epoch"] == 3 and meta["step"] == 40 and meta["config_hash"] == "abc"
    assert params["fc1.w"].e == -9 and params["fc1.w"].m.dtype == np.int8
    assert np.array_equal(params["fc1.w.velocity"].m, _params(5)["fc1.w.velocity"].m)
    assert params["fc1.w.velocity"].m.dtype == np.int32


@pytest.mark.parametrize("where", ["during_write", "before_rename"])
def test_crash_while_saving_keeps_the_old_checkpoint(tmp_path, monkeypatch, where):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_int8(path, _params(1), {"epoch": 0, "step": 10})
    if where == "during_write":
        def broken_savez(f, **arrays):
            f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temp file, then the process "dies"
            raise KeyboardInterrupt
        monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    else:
        def broken_replace(src, dst):
            raise OSError("disk vanished")
        monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises((KeyboardInterrupt, OSError)):
        checkpoint.save_int8(path, _params(2), {"epoch": 1, "step": 20})
    monkeypatch.undo()
    params, meta = checkpoint.load_int8(path)
    assert meta["epoch"] == 0 and int(params["fc1.w"].m[0, 0]) == 1
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the partial temp file is gone


def test_broken_checkpoint_is_user_error(tmp_path):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="checkpoint"):
        checkpoint.load_int8(path)


def test_progress_line_is_plain_text():
    out = io.StringIO()
    bar = Progress(out, enabled=True)
    bar.update("epoch 1/2", 5, 10, 1234.0, "acc 0.5")
    bar.update("epoch 1/2", 10, 10, 1234.0, "acc 0.6")
    bar.line("epoch 1/2: done")
    text = out.getvalue()
    assert text.startswith("\repoch 1/2 [") and "1,234 img/s" in text and text.endswith("epoch 1/2: done\n")
    quiet = io.StringIO()
    Progress(quiet, enabled=False).update("x", 1, 2, 1.0)
    assert quiet.getvalue() == ""


def test_weight_headroom_keeps_values_and_leaves_room():
    from nitisim.contract.graph import NumericsOptions, build_graph
    from nitisim.contract.init import init_params
    from nitisim.contract.models import builtin_models
    from nitisim.train.headroom import with_headroom

    graph = build_graph(builtin_models()["mlp"], 4, NumericsOptions(update_rule="shadow16"))
    base = init_params(graph, 0)
    roomy = with_headroom(graph, base, 2)
    for name in graph.weights:
        a, b = base[name], roomy[name]
        assert b.e == a.e + 2 and int(np.abs(b.m).max()) == 32  # 127 / 4, rounded
        assert np.abs(b.dequantize() - a.dequantize()).max() <= 2.0 ** (b.e - 1)  # half the new LSB
        shadow = roomy[f"{name}.shadow"]
        assert np.array_equal(shadow.m, b.m.astype(np.int16) << 8) and shadow.e == b.e - 8
    assert with_headroom(graph, base, 0) is base
