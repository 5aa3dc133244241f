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
    validation: 0                 # hold the last V training images out of training and report accuracy
                                  # on them every epoch (choose settings on these, never on the test set);
                                  # 0 = none
    train_subset: null            # first N training images (quick runs); with validation, the first N
                                  # of the images left after the split
    test_subset: null             # first M test images
    synthetic: {train: 512, test: 256}   # dataset: synthetic only
    fp32: {lr: 0.01, momentum: 0.9, weight_decay: 0.0005,
           lr_schedule: {kind: cosine},  # constant | cosine | step (milestones, gamma)
           batch_norm: false}     # a BatchNorm2d after every conv of the float twin (the float ceiling)

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
from ..contract.config_reader import Fields, integer, read_yaml
from ..contract.models import ModelSpec, model_as_dict, resolve_model
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
    # a BatchNorm2d after every conv: the float ceiling (the integer net has none; see fp32.SpecNet)
    batch_norm: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The settings; batch_norm only when on, so configs without it keep the resume hash they had
        before the key existed (it changes the network, so when on it is part of the fp32 step hash)."""
        d = dataclasses.asdict(self)
        if not self.batch_norm:
            d.pop("batch_norm")
        return d


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
    validation: int = 0  # last V training images held out for validation (data.split_validation), 0 = none
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
            # only when on, so configs without a validation split keep the resume hash they had before the key
            # existed; when on it is part of the step hash, since it changes which images are trained on
            **({"validation": self.validation} if self.validation else {}),
            "fp32": self.fp32.to_dict(),
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
    """The model's stored form (contract.models.model_as_dict): [kind, fields] layer pairs."""
    return model_as_dict(model)


_TOP_KEYS = {
    "model", "dataset", "batch", "epochs", "mu_schedule", "activation_rounding", "error_rounding",
    "loss_variant", "update_rule", "weight_headroom_bits", "augment", "crop_pad", "erase_size", "average_epochs",
    "input_path", "seed", "eval_batch", "validation", "train_subset", "test_subset", "synthetic", "fp32",
}
_REQUIRED = ("model", "dataset", "batch", "epochs", "mu_schedule")


def load_config(path: str | Path) -> TrainConfig:
    """Read and check a training config file."""
    return read_yaml(path, parse_config)


def numerics_of(path: str | Path | None) -> NumericsOptions:
    """The graph options of the training config at `path` (NITI's defaults for None): what makes a
    simulated or calibrated graph the one that config trains."""
    return NumericsOptions() if path is None else load_config(path).numerics


def parse_config(doc: Any, src: str) -> TrainConfig:
    """Build a TrainConfig from a parsed YAML document; `src` is the file (model paths are relative to it)."""
    if doc is None:
        raise UserInputError(src, None, "the config file is empty")
    r = Fields(src, doc).keys(_REQUIRED, _TOP_KEYS)
    defaults = NumericsOptions()
    model_ref = doc["model"]
    model = resolve_model(model_ref, src)  # errors in a model file name that file
    cfg = dict(
        source=src,
        model_ref=model_ref,
        model=model,
        dataset=r.choice("dataset", DATASETS),
        batch=r.int("batch", minimum=1),
        epochs=r.int("epochs", minimum=1),
        mu_schedule=_mu_schedule(r),
        numerics=NumericsOptions(
            activation_rounding=r.choice("activation_rounding", ROUNDING_MODES, default=defaults.activation_rounding),
            error_rounding=r.choice("error_rounding", ROUNDING_MODES, default=defaults.error_rounding),
            loss_variant=r.choice("loss_variant", LOSS_VARIANTS, default=defaults.loss_variant),
            update_rule=r.choice("update_rule", UPDATE_RULES, default=defaults.update_rule),
        ),
        weight_headroom_bits=r.int("weight_headroom_bits", minimum=0, maximum=MAX_HEADROOM_BITS, default=0),
        augment=r.choice("augment", AUGMENTS, default="none"),
        input_path=r.choice("input_path", INPUT_PATHS, default="int8"),
        seed=r.int("seed", minimum=0, maximum=2**32 - 1, default=0),
        eval_batch=r.int("eval_batch", minimum=1, default=1000),
        validation=r.int("validation", minimum=0, default=0),
        train_subset=r.optional_int("train_subset"),
        test_subset=r.optional_int("test_subset"),
        fp32=_fp32(r.sub("fp32", default={})),
    )
    if "synthetic" in doc:
        if cfg["dataset"] != "synthetic":
            raise r.error("synthetic", f"only allowed with dataset: synthetic (dataset is {cfg['dataset']})")
        s = r.sub("synthetic").keys((), ("train", "test"))
        cfg["synthetic"] = SyntheticOptions(
            train=s.int("train", minimum=1, default=SyntheticOptions.train),
            test=s.int("test", minimum=1, default=SyntheticOptions.test),
        )
    if cfg["dataset"] == "synthetic" and cfg["validation"]:
        # the other data sets' sizes are known only once read (data.split_validation checks them there)
        n_train = cfg.get("synthetic", SyntheticOptions()).train
        left = n_train - cfg["validation"]
        if left < cfg["batch"]:
            raise r.error("validation", f"holding out {cfg['validation']} of the {n_train} synthetic "
                          f"training images leaves {max(left, 0)}, no batch of {cfg['batch']}")
    if "crop_pad" in doc:
        if cfg["augment"] not in CROPPING_AUGMENTS:
            raise r.error("crop_pad", f"only used by augment: {' or '.join(CROPPING_AUGMENTS)} "
                          f"(augment is {cfg['augment']})")
        cfg["crop_pad"] = r.int("crop_pad", minimum=1, maximum=MAX_CROP_PAD)
    if "erase_size" in doc:
        # a square wider than the image would still be clipped to it, but erasing the whole image
        # is never what cutout means, so the image's shorter side is the limit
        cfg["erase_size"] = r.int("erase_size", minimum=0, maximum=min(model.input_shape[:2]))
    if "average_epochs" in doc:
        cfg["average_epochs"] = r.int("average_epochs", minimum=0, maximum=cfg["epochs"])
    if cfg["train_subset"] is not None and cfg["train_subset"] < cfg["batch"]:
        raise r.error("train_subset", f"{cfg['train_subset']} images make no batch of {cfg['batch']}")
    return TrainConfig(**cfg)


def _mu_schedule(r: Fields) -> tuple[MuPhase, ...]:
    phases = []
    for key, item in r.items("mu_schedule", what="must be a non-empty list of {from_epoch, mu}"):
        f = Fields(r.src, item, key).keys(("from_epoch", "mu"))
        phases.append(MuPhase(f.int("from_epoch", minimum=0), f.int("mu", minimum=0, maximum=MU_MAX)))
    if phases[0].from_epoch != 0:
        raise r.error("mu_schedule[0].from_epoch", "the first entry must start at epoch 0")
    for i in range(1, len(phases)):
        if phases[i].from_epoch <= phases[i - 1].from_epoch:
            raise r.error(f"mu_schedule[{i}].from_epoch", "entries must start at increasing epochs")
    return tuple(phases)


def _fp32(d: Fields) -> Fp32Options:
    d.keys((), ("lr", "momentum", "weight_decay", "lr_schedule", "batch_norm"))
    base = Fp32Options()
    return Fp32Options(
        lr=d.number("lr", default=base.lr),
        momentum=d.number("momentum", positive=False, maximum=0.999, default=base.momentum),
        weight_decay=d.number("weight_decay", positive=False, default=base.weight_decay),
        lr_schedule=_lr_schedule(d.sub("lr_schedule", default={})),
        batch_norm=d.bool("batch_norm", default=base.batch_norm),
    )


def _lr_schedule(d: Fields) -> LrSchedule:
    d.keys((), ("kind", "milestones", "gamma"))
    kind = d.choice("kind", LR_SCHEDULES, default="cosine")
    if kind != "step":
        for extra in ("milestones", "gamma"):
            if d.has(extra):
                raise d.error(extra, f"only used by kind: step (kind is {kind})")
        return LrSchedule(kind)
    if not d.has("milestones"):
        raise d.error("milestones", "missing required key for kind: step")
    milestones = tuple(integer(m, d.src, where, minimum=1)
                       for where, m in d.items("milestones", what="must be a non-empty list of epochs"))
    if list(milestones) != sorted(set(milestones)):
        raise d.error("milestones", "must be strictly increasing")
    gamma = d.number("gamma", maximum=1.0, default=0.1)
    return LrSchedule(kind, milestones, gamma)
