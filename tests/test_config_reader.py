"""The one strict config reader (nitisim/contract/config_reader.py): each field reader, the file and
the field in every error, a frozen dataclass out, unknown keys refused; every config kind (models,
training configs, accelerators, hosts, sweep grids, the config `nitisim run` derives) read through
it; the one model-reference resolver; shipped configs found from the working directory, then as
package data."""
from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest

from nitisim.contract import config_reader as cr
from nitisim.contract.config_reader import Fields
from nitisim.contract.errors import UserInputError
from nitisim.contract.shipped import CONFIGS, find_shipped
from nitisim.contract.values import quote

ROOT = Path(__file__).resolve().parents[1]
SRC = "cfg.yaml"


def _error(fn, *args, **kwargs) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------------------------------
# Field readers: the value when good, (file, field, problem) when not
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, doc, kwargs, good", [
    ("int", {"k": 3}, {}, 3),
    ("int", {"k": 0}, {"minimum": 0}, 0),
    ("positive_int", {"k": 7}, {}, 7),
    ("positive_int", {"k": 0}, {"allow_zero": True}, 0),
    ("number", {"k": 2}, {}, 2.0),
    ("number", {"k": "5e-4"}, {}, 5e-4),  # YAML 1.1 reads an exponent without a dot as a string
    ("number", {"k": 0}, {"positive": False}, 0.0),
    ("positive_number", {"k": 500}, {}, 500),
    ("choice", {"k": "ws"}, {"allowed": ("ws", "os")}, "ws"),
    ("str", {"k": "edge"}, {}, "edge"),
    ("bool", {"k": False}, {}, False),
])
def test_field_readers_return_good_values(method, doc, kwargs, good):
    value = getattr(Fields(SRC, doc), method)("k", **kwargs)
    assert value == good and type(value) is type(good)


@pytest.mark.parametrize("method, value, kwargs, problem", [
    ("int", "two", {}, "must be an integer, got string 'two'"),
    ("int", True, {}, "must be an integer, got boolean True"),
    ("int", 2.0, {}, "must be an integer, got number 2.0"),
    ("int", 0, {}, "must be at least 1, got 0"),
    ("int", 17, {"minimum": 1, "maximum": 16}, "must be in 1..16, got 17"),
    ("int", 2**60, {}, f"must be at most {2**53} (2**53), got {2**60}"),
    ("positive_int", 0, {}, "must be a positive integer, got 0"),
    ("positive_int", -1, {"allow_zero": True}, "must be a non-negative integer, got -1"),
    ("positive_int", None, {}, "must be a positive integer, got None"),
    ("number", math.inf, {}, "must be a finite number, got inf"),
    ("number", math.nan, {}, "must be a finite number, got nan"),
    ("number", "inf", {}, "must be a finite number, got 'inf'"),  # only plain decimals count as numbers
    ("number", 10**400, {}, f"must be a finite number, got {quote(10**400)}"),  # overflows a float
    ("number", -5, {}, "must be positive, got -5"),
    ("number", -1, {"positive": False}, "must not be negative, got -1"),
    ("number", 1.5, {"positive": False, "maximum": 0.999}, "must be >= 0 and <= 0.999, got 1.5"),
    ("positive_number", 0, {}, "must be a positive number, got 0"),
    ("positive_number", math.inf, {}, "must be a positive number, got inf"),
    ("choice", "xs", {"allowed": ("ws", "os")}, "must be one of ws, os, got 'xs'"),
    ("choice", ["ws"], {"allowed": ("ws", "os")}, "must be one of ws, os, got ['ws']"),
    ("str", "   ", {}, f"must be a non-empty string, got {quote('   ')}"),
    ("bool", "yes!", {}, "must be true or false, got 'yes!'"),
])
def test_field_readers_name_file_and_field(method, value, kwargs, problem):
    err = _error(getattr(Fields(SRC, {"k": value}, "outer"), method), "k", **kwargs)
    assert (err.source, err.field, err.message) == (SRC, "outer.k", problem)
    assert str(err) == f"{SRC}: outer.k: {problem}"


def test_value_readers_name_the_path_they_are_given():
    err = _error(cr.integer, "x", SRC, "layers[2].conv.kernel")
    assert (err.source, err.field) == (SRC, "layers[2].conv.kernel")
    assert _error(cr.positive_number, -1, SRC, "parameters.clock_mhz[1]").field == "parameters.clock_mhz[1]"


def test_missing_required_and_optional_default():
    f = Fields(SRC, {"a": 1})
    assert f.int("b", default=4) == 4 and f.optional_int("b") is None and f.choice("c", ("x",), default="x") == "x"
    err = _error(f.int, "b")
    assert (err.field, err.message) == ("b", "missing required key")


def test_unknown_and_missing_keys_refused_with_their_path():
    f = Fields(SRC, {"lr": 1, "colour": "red"}, "fp32")
    err = _error(f.keys, (), ("lr", "momentum"))
    assert (err.field, err.message) == ("fp32.colour", "unknown key; expected one of lr, momentum")
    err = _error(Fields(SRC, {"lr": 1}, "fp32").keys, ("lr", "momentum"))
    assert (err.field, err.message) == ("fp32.momentum", "missing required key")
    assert Fields(SRC, {"lr": 1}).keys(("lr",), ("momentum",)).doc == {"lr": 1}


def test_nested_mappings_and_lists_carry_the_path():
    f = Fields(SRC, {"buffers": {"ofmap": {"kib": 0}}, "layers": [1, "x"], "empty": []})
    assert _error(f.sub("buffers").sub("ofmap").int, "kib").field == "buffers.ofmap.kib"
    assert list(f.items("layers")) == [("layers[0]", 1), ("layers[1]", "x")]
    err = _error(lambda: [cr.positive_int(v, SRC, w) for w, v in f.items("layers")])
    assert err.field == "layers[1]"
    assert _error(lambda: list(f.items("empty"))).message == "must be a non-empty list"
    err = _error(Fields, SRC, [1, 2], "fp32")
    assert (err.field, err.message) == ("fp32", "must be a mapping, got list")
    assert _error(f.sub, "layers").message == "must be a mapping, got list"


# ------------------------------------------------------------------------------------------------
# A frozen dataclass out
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Spec:
    batch: int
    source: str


@dataclasses.dataclass
class _Mutable:
    batch: int


def test_read_yaml_returns_the_parsers_frozen_dataclass(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("batch: 8\n")
    spec = cr.read_yaml(path, lambda doc, src: _Spec(Fields(src, doc).keys(("batch",)).int("batch"), src))
    assert spec == _Spec(8, str(path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch = 9  # type: ignore[misc]
    with pytest.raises(TypeError, match="not a frozen dataclass"):
        cr.read_yaml(path, lambda doc, src: _Mutable(doc["batch"]))
    with pytest.raises(TypeError, match="not a frozen dataclass"):
        cr.read_yaml(path, lambda doc, src: doc)
    path.write_text("batch: 8\ncolour: red\n")
    err = _error(cr.read_yaml, path, lambda doc, src: _Spec(Fields(src, doc).keys(("batch",)).int("batch"), src))
    assert str(err) == f"{path}: colour: unknown key; expected one of batch"


# ------------------------------------------------------------------------------------------------
# Every config kind goes through the reader
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def seen(monkeypatch):
    """Sources every Fields was built for, and files read through read_yaml / load_document."""
    record: dict[str, list[str]] = {"fields": [], "files": []}
    init, load = Fields.__init__, cr.load_yaml_file

    def counting_init(self, src, doc, where=None, **kwargs):
        record["fields"].append(str(src))
        init(self, src, doc, where, **kwargs)

    def counting_load(path):
        record["files"].append(str(path))
        return load(path)

    monkeypatch.setattr(Fields, "__init__", counting_init)
    monkeypatch.setattr(cr, "load_yaml_file", counting_load)
    return record


def test_every_config_kind_is_read_through_the_reader(seen, tmp_path):
    from hwmodels.config import load_accelerator, resolve_accelerator
    from hwmodels.sweep import load_grid
    from nitisim.contract.models import resolve_model
    from nitisim.train.config import load_config

    kinds = {
        "model": (CONFIGS / "models" / "vgg-small-fmnist.yaml", resolve_model),
        "training config": (CONFIGS / "train" / "fashion-lenet.yaml", load_config),
        "accelerator": (CONFIGS / "accelerators" / "edge-16x16.yaml", load_accelerator),
        "host": (CONFIGS / "hosts" / "h200-sxm.yaml", lambda p: resolve_accelerator(str(p))),
        "sweep grid": (CONFIGS / "sweeps" / "example.yaml", load_grid),
    }
    for kind, (path, load) in kinds.items():
        seen["fields"].clear()
        seen["files"].clear()
        spec = load(path)
        assert str(path) in seen["files"], kind
        assert str(path) in seen["fields"], kind
        assert dataclasses.is_dataclass(spec) and type(spec).__dataclass_params__.frozen, kind
    host = resolve_accelerator(str(kinds["host"][0]))
    assert host.host is not None  # the host section was read, by the same Fields


def test_run_reads_its_training_config_through_the_reader(seen, tmp_path):
    import argparse

    from nitisim import run_cli

    config = tmp_path / "cfg" / "t.yaml"
    config.parent.mkdir()
    (tmp_path / "net.yaml").write_text((CONFIGS / "models" / "vgg-small-fmnist.yaml").read_text())
    config.write_text("model: ../net.yaml\ndataset: synthetic\nbatch: 8\nepochs: 1\n"
                      "mu_schedule: [{from_epoch: 0, mu: 2}]\n")
    args = argparse.Namespace(epochs=None, train_subset=None, tiny=False, config=str(config), backend="numpy", device=None,
                              data=None, accelerators=None, out=str(tmp_path / "out"))
    plan = run_cli.plan(args, tmp_path / "out")
    assert str(config) in seen["files"] and str(config) in seen["fields"]
    assert plan.model == str((tmp_path / "net.yaml").resolve())  # the one resolver, made absolute


def test_only_the_reader_loads_yaml():
    """No module of the three packages parses YAML itself: the strict loader is called only by the
    config reader, so every config gets its checks."""
    offenders = []
    for package in ("nitisim", "hwmodels", "gpu_backend"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ("nitisim/contract/strict_yaml.py", "nitisim/contract/config_reader.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("safe_load", "load", "full_load") and \
                        isinstance(node.value, ast.Name) and node.value.id == "yaml":
                    offenders.append(f"{rel}:{node.lineno} yaml.{node.attr}")
                if isinstance(node, ast.Name) and node.id == "load_yaml_file":
                    offenders.append(f"{rel}:{node.lineno} load_yaml_file")
    assert offenders == []


# ------------------------------------------------------------------------------------------------
# One model-reference resolver
# ------------------------------------------------------------------------------------------------
def test_model_references_resolve_relative_to_the_referring_file(tmp_path):
    from nitisim.contract.models import builtin_models, model_reference, resolve_model

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.yaml").write_text((CONFIGS / "models" / "vgg-small-fmnist.yaml").read_text())
    referrer = tmp_path / "train" / "t.yaml"
    referrer.parent.mkdir()
    assert resolve_model("lenet") == builtin_models()["lenet"]
    assert model_reference("lenet", referrer) == "lenet"
    assert model_reference("../models/net.yaml", referrer) == str(tmp_path / "train" / "../models/net.yaml")
    assert model_reference("../models/net.yaml", referrer, absolute=True) == str(tmp_path / "models" / "net.yaml")
    assert resolve_model("../models/net.yaml", referrer).name == "vgg-small-fmnist"
    err = _error(resolve_model, "resnet", referrer)
    assert (err.source, err.field) == (str(referrer), "model")
    assert err.message.startswith("'resnet' is neither a built-in model (mlp, lenet")
    err = _error(resolve_model, 5, referrer)
    assert (err.source, err.field, err.message) == (str(referrer), "model",
                                                    "must be a built-in model name or a model YAML path, got 5")
    (tmp_path / "models" / "bad.yaml").write_text("input: [28, 28, 1]\nlayers: [{conv: {out: 0, kernel: 3}}]\n")
    err = _error(resolve_model, "../models/bad.yaml", referrer)  # the model file's own error names it
    assert (err.source, err.field) == (str(tmp_path / "train" / "../models/bad.yaml"), "layers[0].conv.out")


# ------------------------------------------------------------------------------------------------
# Shipped configs: the working directory's first, then package data
# ------------------------------------------------------------------------------------------------
def test_shipped_names_resolve_from_the_working_directory_then_package_data(tmp_path, monkeypatch):
    from hwmodels.config import resolve_accelerator

    monkeypatch.chdir(tmp_path)  # an empty folder: the package data answers
    assert find_shipped("accelerators", "edge-16x16") == CONFIGS / "accelerators" / "edge-16x16.yaml"
    assert resolve_accelerator("edge-16x16").array.rows == 16
    assert find_shipped("accelerators", "no-such-chip") is None
    own = tmp_path / "configs" / "accelerators" / "edge-16x16.yaml"
    own.parent.mkdir(parents=True)
    own.write_text((CONFIGS / "accelerators" / "edge-16x16.yaml").read_text().replace("rows: 16", "rows: 8", 1))
    assert find_shipped("accelerators", "edge-16x16") == Path.cwd() / "configs" / "accelerators" / "edge-16x16.yaml"
    assert resolve_accelerator("edge-16x16").array.rows == 8
    with pytest.raises(ValueError):
        find_shipped("nonsense", "edge-16x16")


def test_nothing_finds_configs_through_parents():
    """The shipped configs are package data (nitisim/configs, contract/shipped.py CONFIGS); no module
    finds them by walking up from its own file."""
    offenders = []
    for package in ("nitisim", "hwmodels", "gpu_backend"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "parents[" in text and "configs" in text:
                offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
