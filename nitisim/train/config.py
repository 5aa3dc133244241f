"""The training config: a frozen dataclass read strictly from YAML.

Every problem (unknown key, missing key, wrong type, value out of range, malformed YAML) raises
`UserInputError(config path, "key.path", problem)`, so the CLI prints one line and exits 2.

YAML form (configs/train/*.yaml):

    model: lenet                  # built-in name, or a model YAML path relative to this file
    dataset: fashion-mnist        # fashion-mnist | mnist | cifar10 | synthetic
    batch: 256
    epochs: 10
    mu_schedule:                  # NITI's learning rate: |weight step| <= 2**mu
      - {from_epoch: 0, mu: 2}
    activation_rounding: pseudo_stochastic   # nearest | pseudo_stochastic | stochastic
    error_rounding: pseudo_stochastic
    loss_variant: niti            # niti | fine
    update_rule: plain            # plain | momentum | shadow16
    weight_headroom_bits: 0       # start weights at 127 / 2**bits so they can grow (see headroom.py)
    augment: none                 # none | crop | flip | crop_flip (zero-pad, random crop; horizontal flip)
    crop_pad: 4                   # crop and crop_flip only: pixels of zero padding around each image
    erase_size: 0                 # cutout: one erase_size x erase_size square per training image set to
                                  # pixel 0, after any crop/flip, centre anywhere (clipped); 0 = off
    average_epochs: 0             # final model = rounded mean of the weights at the ends of the last
                                  # N epochs (integer SWA, train/averaging.py); 0 = off
    input_path: int8              # int8 | float (float-normalised, --arith fp32 only)
    seed: 0
    eval_batch: 1000
    train_subset: null            # first N training images (quick runs)
    test_subset: null             # first M test images
    synthetic: {train: 512, test: 256}   # dataset: synthetic only
    fp32: {lr: 0.01, momentum: 0.9, weight_decay: 0.0005,
           lr_schedule: {kind: cosine}}  # constant | cosine | step (milestones, gamma)

Required: model, dataset, batch, epochs, mu_schedule. The rest have the defaults above.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import UserInputError
from ..contract.graph import NumericsOptions
from ..contract.models import ModelSpec, builtin_models, parse_model, load_yaml
from ..contract.values import finite_number, path_exists, quote
from ..contract.numerics import LOSS_VARIANTS, ROUNDING_MODES, UPDATE_RULES
from .headroom import MAX_HEADROOM_BITS

DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "cifar10", "synthetic")
AUGMENTS: tuple[str, ...] = ("none", "crop", "flip", "crop_flip")
CROPPING_AUGMENTS: tuple[str, ...] = ("crop", "crop_flip")
MAX_CROP_PAD = 16  # half a 32x32 image: a crop shifted further shows more padding than image
INPUT_PATHS: tuple[str, ...] = ("int8", "float")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
MU_MAX = 15  # a weight step of 2**15 LSBs already exceeds the int8 range many times over


@dataclass(frozen=True)
class MuPhase:
    from_epoch: int  # first epoch (0-based) this mu applies to
    mu: int


@dataclass(frozen=True)
class LrSchedule:
    kind: str = "cosine"  # constant | cosine (to 0 over the run's epochs) | step
    milestones: tuple[int, ...] = ()  # step: epochs at which lr is multiplied by gamma
    gamma: float = 0.1


@dataclass(frozen=True)
class Fp32Options:
    """SGD settings for `--arith fp32`; the integer trainer ignores them."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: LrSchedule = LrSchedule()


@dataclass(frozen=True)
class SyntheticOptions:
    train: int = 512  # images; shape and classes come from the model
    test: int = 256


@dataclass(frozen=True)
class TrainConfig:
    source: str  # the YAML file, for messages and the default run folder name
    model_ref: str  # `model:` as written
    model: ModelSpec = field(repr=False)
    dataset: str
    batch: int
    epochs: int
    mu_schedule: tuple[MuPhase, ...]
    numerics: NumericsOptions = NumericsOptions()
    weight_headroom_bits: int = 0  # initial weights at full scale / 2**bits: room to grow (NITI: 0)
    augment: str = "none"  # integer-only, on the uint8 batch before the graph (datasets.transforms)
    crop_pad: int = 4  # zero padding of the random crop (NITI's CIFAR recipe: 4; 28x28 images: 2)
    erase_size: int = 0  # cutout square side in pixels, 0 = off (datasets.transforms.random_erase)
    average_epochs: int = 0  # weight average over the last N epoch ends, 0 = off (train/averaging.py)
    input_path: str = "int8"
    seed: int = 0
    eval_batch: int = 1000
    train_subset: int | None = None
    test_subset: int | None = None
    synthetic: SyntheticOptions = SyntheticOptions()
    fp32: Fp32Options = Fp32Options()

    @property
    def stem(self) -> str:
        return Path(self.source).stem

    def mu_at(self, epoch: int) -> int:
        """mu of the last schedule entry starting at or before `epoch`."""
        mu = self.mu_schedule[0].mu
        for phase in self.mu_schedule:
            if phase.from_epoch <= epoch:
                mu = phase.mu
        return mu

    @property
    def average_from_epoch(self) -> int:
        """First epoch (0-based) whose end weights join the average (all of them when the run is shorter)."""
        return max(0, self.epochs - self.average_epochs)

    def with_epochs(self, epochs: int) -> "TrainConfig":
        return dataclasses.replace(self, epochs=epochs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able echo: the settings, with the model expanded to its layers."""
        out = {
            "model": self.model_ref,
            "model_spec": model_to_dict(self.model),
            "dataset": self.dataset,
            "batch": self.batch,
            "epochs": self.epochs,
            "mu_schedule": [dataclasses.asdict(p) for p in self.mu_schedule],
            **dataclasses.asdict(self.numerics),
            "weight_headroom_bits": self.weight_headroom_bits,
            "augment": self.augment,
            **({"crop_pad": self.crop_pad} if self.augment in CROPPING_AUGMENTS else {}),
            # only when on, so configs without cutout keep the resume hash they had before the key existed
            **({"erase_size": self.erase_size} if self.erase_size else {}),
            **({"average_epochs": self.average_epochs} if self.average_epochs else {}),
            "input_path": self.input_path,
            "seed": self.seed,
            "eval_batch": self.eval_batch,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "fp32": dataclasses.asdict(self.fp32),
        }
        if self.dataset == "synthetic":
            out["synthetic"] = dataclasses.asdict(self.synthetic)
        return out

    def step_hash(self, arith: str) -> str:
        """Hash of everything that decides a training step's result, for checking a resume.

        `epochs` is left out on purpose: running 1 epoch and resuming with --epochs 2 must be
        allowed and must match a 2-epoch run. The integer run does not read the fp32 section,
        and eval_batch changes no weight, so neither is part of the integer hash. Averaging reads the
        weights and never writes them, so average_epochs is left out too (a resume checks the
        checkpoint's average itself).
        """
        d = self.to_dict()
        d.pop("epochs")
        d.pop("eval_batch")
        d.pop("average_epochs", None)
        d.pop("model")  # the expanded spec decides, not how it was named
        if arith == "int8":
            d.pop("fp32")
        d["arith"] = arith
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def model_to_dict(model: ModelSpec) -> dict[str, Any]:
    """Layers as [kind, fields] pairs (ReLU and Flatten both have no fields, so the kind is needed)."""
    return {
        "name": model.name,
        "input": list(model.input_shape),
        "classes": model.classes,
        "layers": [[type(layer).__name__.lower(), dataclasses.asdict(layer)] for layer in model.layers],
    }


# ------------------------------------------------------------------------------------------------
# Strict field readers: each names the file and the key path in its error.
# ------------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, src: str):
        self.src = src

    def fail(self, key: str | None, problem: str) -> UserInputError:
        return UserInputError(self.src, key, problem)

    def mapping(self, doc: Any, key: str | None, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(doc, dict):
            raise self.fail(key, f"must be a mapping, got {_kind(doc)}")
        prefix = f"{key}." if key else ""
        for k in doc:
            if k not in allowed:
                raise self.fail(f"{prefix}{k}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
        for k in required:
            if k not in doc:
                raise self.fail(f"{prefix}{k}", "missing required key")
        return doc

    def int_(self, value: Any, key: str, *, minimum: int = 0, maximum: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, got {_kind(value)} {quote(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            span = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise self.fail(key, f"must be {span}, got {value}")
        return value

    def optional_int(self, value: Any, key: str, *, minimum: int = 1) -> int | None:
        return None if value is None else self.int_(value, key, minimum=minimum)

    def float_(self, value: Any, key: str, *, minimum: float = 0.0, maximum: float | None = None,
               strict_min: bool = False) -> float:
        # PyYAML reads `5e-4` (no dot) as a string, a well-known YAML 1.1 quirk: accept a string
        # that is a plain decimal number, reject everything else.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.fail(key, f"must be a number, got {quote(value)}") from None
        if not finite_number(value):  # `.inf`, `.nan`, `1e999` and a string of them parse as floats
            raise self.fail(key, f"must be a finite number, got {_kind(value)} {quote(value)}")
        low_ok = value > minimum if strict_min else value >= minimum
        if not low_ok or (maximum is not None and value > maximum):
            bound = f"{'>' if strict_min else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            raise self.fail(key, f"must be {bound}, got {value}")
        return float(value)

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {quote(value)}")
        return value


def _kind(value: Any) -> str:
    return {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)


_TOP_KEYS = {
    "model", "dataset", "batch", "epochs", "mu_schedule", "activation_rounding", "error_rounding",
    "loss_variant", "update_rule", "weight_headroom_bits", "augment", "crop_pad", "erase_size", "average_epochs",
    "input_path", "seed", "eval_batch", "train_subset", "test_subset", "synthetic", "fp32",
}
_REQUIRED = ("model", "dataset", "batch", "epochs", "mu_schedule")


def load_config(path: str | Path) -> TrainConfig:
    """Read and check a training config file."""
    src = str(path)
    return parse_config(load_yaml(path), src)


def numerics_of(path: str | Path | None) -> NumericsOptions:
    """The graph options of the training config at `path` (NITI's defaults for None): what makes a
    simulated or calibrated graph the one that config trains."""
    return NumericsOptions() if path is None else load_config(path).numerics


def parse_config(doc: Any, src: str) -> TrainConfig:
    """Build a TrainConfig from a parsed YAML document; `src` is the file (model paths are relative to it)."""
    r = _Reader(src)
    if doc is None:
        raise r.fail(None, "the config file is empty")
    r.mapping(doc, None, _TOP_KEYS, _REQUIRED)
    defaults = NumericsOptions()
    model_ref = doc["model"]
    if not isinstance(model_ref, str) or not model_ref:
        raise r.fail("model", f"must be a built-in model name or a model YAML path, got {quote(model_ref)}")
    model = _resolve_model(model_ref, src)
    cfg = dict(
        source=src,
        model_ref=model_ref,
        model=model,
        dataset=r.choice(doc["dataset"], "dataset", DATASETS),
        batch=r.int_(doc["batch"], "batch", minimum=1),
        epochs=r.int_(doc["epochs"], "epochs", minimum=1),
        mu_schedule=_mu_schedule(r, doc["mu_schedule"]),
        numerics=NumericsOptions(
            activation_rounding=r.choice(doc.get("activation_rounding", defaults.activation_rounding),
                                         "activation_rounding", ROUNDING_MODES),
            error_rounding=r.choice(doc.get("error_rounding", defaults.error_rounding), "error_rounding",
                                    ROUNDING_MODES),
            loss_variant=r.choice(doc.get("loss_variant", defaults.loss_variant), "loss_variant", LOSS_VARIANTS),
            update_rule=r.choice(doc.get("update_rule", defaults.update_rule), "update_rule", UPDATE_RULES),
        ),
        weight_headroom_bits=r.int_(doc.get("weight_headroom_bits", 0), "weight_headroom_bits",
                                    maximum=MAX_HEADROOM_BITS),
        augment=r.choice(doc.get("augment", "none"), "augment", AUGMENTS),
        input_path=r.choice(doc.get("input_path", "int8"), "input_path", INPUT_PATHS),
        seed=r.int_(doc.get("seed", 0), "seed", minimum=0, maximum=2**32 - 1),
        eval_batch=r.int_(doc.get("eval_batch", 1000), "eval_batch", minimum=1),
        train_subset=r.optional_int(doc.get("train_subset"), "train_subset"),
        test_subset=r.optional_int(doc.get("test_subset"), "test_subset"),
        fp32=_fp32(r, doc.get("fp32", {})),
    )
    if "synthetic" in doc:
        if cfg["dataset"] != "synthetic":
            raise r.fail("synthetic", f"only allowed with dataset: synthetic (dataset is {cfg['dataset']})")
        s = r.mapping(doc["synthetic"], "synthetic", {"train", "test"})
        cfg["synthetic"] = SyntheticOptions(
            train=r.int_(s.get("train", SyntheticOptions.train), "synthetic.train", minimum=1),
            test=r.int_(s.get("test", SyntheticOptions.test), "synthetic.test", minimum=1),
        )
    if "crop_pad" in doc:
        if cfg["augment"] not in CROPPING_AUGMENTS:
            raise r.fail("crop_pad", f"only used by augment: {' or '.join(CROPPING_AUGMENTS)} "
                         f"(augment is {cfg['augment']})")
        cfg["crop_pad"] = r.int_(doc["crop_pad"], "crop_pad", minimum=1, maximum=MAX_CROP_PAD)
    if "erase_size" in doc:
        # a square wider than the image would still be clipped to it, but erasing the whole image
        # is never what cutout means, so the image's shorter side is the limit
        cfg["erase_size"] = r.int_(doc["erase_size"], "erase_size", minimum=0, maximum=min(model.input_shape[:2]))
    if "average_epochs" in doc:
        cfg["average_epochs"] = r.int_(doc["average_epochs"], "average_epochs", maximum=cfg["epochs"])
    if cfg["train_subset"] is not None and cfg["train_subset"] < cfg["batch"]:
        raise r.fail("train_subset", f"{cfg['train_subset']} images make no batch of {cfg['batch']}")
    return TrainConfig(**cfg)


def _resolve_model(ref: str, src: str) -> ModelSpec:
    models = builtin_models()
    if ref in models:
        return models[ref]
    path = Path(src).parent / ref
    if Path(ref).suffix not in (".yaml", ".yml") and not path_exists(path):
        raise UserInputError(src, "model", f"{quote(ref)} is neither a built-in model ({', '.join(models)}) "
                             "nor a model YAML file")
    return parse_model(load_yaml(path), str(path))  # errors there name the model file


def _mu_schedule(r: _Reader, value: Any) -> tuple[MuPhase, ...]:
    if not isinstance(value, list) or not value:
        raise r.fail("mu_schedule", "must be a non-empty list of {from_epoch, mu}")
    phases = []
    for i, item in enumerate(value):
        key = f"mu_schedule[{i}]"
        r.mapping(item, key, {"from_epoch", "mu"}, ("from_epoch", "mu"))
        phases.append(MuPhase(r.int_(item["from_epoch"], f"{key}.from_epoch"),
                              r.int_(item["mu"], f"{key}.mu", maximum=MU_MAX)))
    if phases[0].from_epoch != 0:
        raise r.fail("mu_schedule[0].from_epoch", "the first entry must start at epoch 0")
    for i in range(1, len(phases)):
        if phases[i].from_epoch <= phases[i - 1].from_epoch:
            raise r.fail(f"mu_schedule[{i}].from_epoch", "entries must start at increasing epochs")
    return tuple(phases)


def _fp32(r: _Reader, value: Any) -> Fp32Options:
    d = r.mapping(value, "fp32", {"lr", "momentum", "weight_decay", "lr_schedule"})
    base = Fp32Options()
    return Fp32Options(
        lr=r.float_(d.get("lr", base.lr), "fp32.lr", strict_min=True),
        momentum=r.float_(d.get("momentum", base.momentum), "fp32.momentum", maximum=0.999),
        weight_decay=r.float_(d.get("weight_decay", base.weight_decay), "fp32.weight_decay"),
        lr_schedule=_lr_schedule(r, d.get("lr_schedule", {})),
    )


def _lr_schedule(r: _Reader, value: Any) -> LrSchedule:
    key = "fp32.lr_schedule"
    d = r.mapping(value, key, {"kind", "milestones", "gamma"})
    kind = r.choice(d.get("kind", "cosine"), f"{key}.kind", LR_SCHEDULES)
    if kind != "step":
        for extra in ("milestones", "gamma"):
            if extra in d:
                raise r.fail(f"{key}.{extra}", f"only used by kind: step (kind is {kind})")
        return LrSchedule(kind)
    if "milestones" not in d:
        raise r.fail(f"{key}.milestones", "missing required key for kind: step")
    ms = d["milestones"]
    if not isinstance(ms, list) or not ms:
        raise r.fail(f"{key}.milestones", "must be a non-empty list of epochs")
    milestones = tuple(r.int_(m, f"{key}.milestones[{i}]", minimum=1) for i, m in enumerate(ms))
    if list(milestones) != sorted(set(milestones)):
        raise r.fail(f"{key}.milestones", "must be strictly increasing")
    gamma = r.float_(d.get("gamma", 0.1), f"{key}.gamma", strict_min=True, maximum=1.0)
    return LrSchedule(kind, milestones, gamma)
