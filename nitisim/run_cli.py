"""`nitisim run`: the main job. Train the default model in integers and in float32, simulate the
shipped accelerator configs on the same model and batch, and write the comparison report.

The training config is read once (`plan`) and every stage is the function its own command calls
(train.stage.train_int8 / train_fp32, calibrate.cli.calibrate_host, simulate_cli.simulate,
report.cli.compare_runs) on the parsed objects, so the folders it leaves are exactly what those
commands write:

    nitisim-out/
      configs/<stem>.yaml          the training config as run (the shipped one plus the short-run overrides)
      runs/<stem>-int8/            integer run (metrics.jsonl, summary.json, timing.json, checkpoint)
      runs/<stem>-fp32/            its float32 twin
      host/<name>.yaml             the calibrated model of this host (`nitisim calibrate`), on the C backend
      sims/<accelerator>/          one simulation per configs/accelerators/*.yaml, and one of the
                                   machine model: the calibrated host, or configs/hosts/h200-sxm.yaml on CUDA
      report.html report.md compare.json plots/

The default is a short run (all of Fashion-MNIST, two epochs) that takes a minute or two on a
2-core CPU with the C backend; `--train-subset N` trains on the first N images. `--tiny` trains a small MLP on
synthetic data for a few steps, for tests and smoke checks. `--backend` picks the integer run's
kernels, `--device` the float32 twin's torch device (default: the one --backend implies).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from .contract.errors import UserInputError
from .contract.models import load_yaml, model_reference
from .contract.shipped import CONFIGS
from .train.config import TrainConfig
from .train.folder_lock import locked_folder

if TYPE_CHECKING:
    from hwmodels.spec import AcceleratorSpec

DEFAULT_CONFIG = CONFIGS / "train" / "fashion-lenet.yaml"
DEFAULT_OUT = "nitisim-out"
# The default: LeNet on all of Fashion-MNIST for two epochs: about 15 s of integer training on the
# C backend and under a minute for the float32 twin on 2 cores (numpy reference: about 5 minutes).
DEFAULT_TRAIN_SUBSET = 0  # 0: the whole training set
DEFAULT_TEST_SUBSET = None  # None: the whole test set
DEFAULT_EPOCHS = 2
BUSY_LOAD = 0.5  # 1-minute load average above which the measured times are flagged as shared
GPU_MODEL = CONFIGS / "hosts" / "h200-sxm.yaml"  # the machine model of a CUDA run (public specs)
# the float32 twin's torch device when --device is not given: the GPU when the integer run may use one
TWIN_DEVICE = {"numpy": "cpu", "cpu": "cpu", "cuda": "cuda", "auto": "auto"}


def tiny_config() -> dict[str, Any]:
    """--tiny: a few steps of a small MLP on generated data; seconds end to end."""
    return {
        "model": "mlp",
        "dataset": "synthetic",
        "synthetic": {"train": 128, "test": 64},
        "batch": 32,
        "epochs": 1,
        "mu_schedule": [{"from_epoch": 0, "mu": 2}],
        "seed": 1,
        "eval_batch": 64,
        "fp32": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "lr_schedule": {"kind": "constant"}},
    }


@dataclass(frozen=True)
class Plan:
    config: Path  # the derived training config, written into the output folder by write_plan
    config_text: str  # its YAML
    stem: str
    train: TrainConfig  # that config, parsed once: what every stage is given (source: `config`)
    epochs: int | None  # the run's epochs override (None: the config's)
    int_backend: str  # kernel table of the integer run
    fp32_device: str  # torch device of the float32 twin

    @property
    def model(self) -> str:
        """Built-in name or absolute model YAML path, as the written config names it."""
        return self.train.model_ref

    @property
    def batch(self) -> int:
        return self.train.batch


@dataclass(frozen=True)
class Machines:
    """The accelerator configs to simulate, parsed: (folder name under sims/, spec) each; and the
    GPU's machine model when the run may end up on CUDA."""
    accelerators: list[tuple[str, AcceleratorSpec]]
    gpu: AcceleratorSpec | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--config", help="training config (default configs/train/fashion-lenet.yaml)")
    parser.add_argument("--backend", choices=("numpy", "cpu", "cuda", "auto"),
                        help="integer kernels (default auto: the first usable of cuda, cpu, numpy; numpy with --tiny)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"),
                        help="torch device of the float32 twin (default: cuda with --backend cuda or auto "
                             "(auto: cuda when torch sees one), else cpu)")
    parser.add_argument("--epochs", type=int, help=f"epochs (default {DEFAULT_EPOCHS} for the default config, "
                        "else the config's)")
    parser.add_argument("--train-subset", type=int, help="first N training images (default: all "
                        "for the default config; 0 = all)")
    parser.add_argument("--data", help="dataset folder (default: discovery, see nitisim train --help)")
    parser.add_argument("--accelerators", nargs="+", metavar="ARCH",
                        help="accelerator configs to simulate (default: every configs/accelerators/*.yaml)")
    parser.add_argument("--tiny", action="store_true", help="a few steps of an MLP on synthetic data (seconds)")


def _check_positive(value: int | None, flag: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UserInputError(flag, None, f"must be a {'non-negative' if allow_zero else 'positive'} integer, "
                             f"got {value}")


def _model_ref(doc: dict, config_path: Path) -> str:
    """The config's model as the simulator and a relocated config can read it: a built-in name or
    an absolute path (a relative path in a config is relative to that config's folder)."""
    ref = doc.get("model")
    return model_reference(ref, config_path, absolute=True) if isinstance(ref, str) and ref else ref


def int_backend(args: argparse.Namespace) -> str:
    return args.backend or ("numpy" if args.tiny else "auto")


def _check_training(doc: dict, source: Path | None, subset_flag: bool, backend: str, device: str) -> TrainConfig:
    """Parse the training config, naming the user's file (not the copy this command writes): a bad
    field stops the run before anything trains. A train_subset that came from --train-subset is
    that flag's problem, not the file's. Then both trainings' memory: the float32 twin needs more
    than the integer run, and would otherwise fail only after it (a backend or device that may be a
    GPU holds only the parameters on the host)."""
    from .memory_estimate import check_training_fits
    from .train.config import parse_config

    src = str(source) if source else "--tiny"
    try:
        cfg = parse_config(doc, src)
    except UserInputError as err:
        if subset_flag and err.field in ("train_subset", "synthetic.train"):
            raise UserInputError("--train-subset", None, err.message) from None
        raise
    check_training_fits(cfg.model, cfg.batch, "int8", src, update_rule=cfg.numerics.update_rule,
                        on_device=backend not in ("numpy", "cpu"))
    check_training_fits(cfg.model, cfg.batch, "fp32", src, momentum=cfg.fp32.momentum != 0,
                        on_device=device != "cpu")
    return cfg


def check_machine_configs(arches: list[str], backend: str) -> Machines:
    """Load every accelerator config to simulate, and the GPU's machine model when the run may end up
    on CUDA, with the simulator's own strict loader: errors name the file and the field, before any
    training (the calibrated host model is written by this run, and checked when it is)."""
    from hwmodels.config import resolve_accelerator

    accelerators = [(Path(arch).stem, resolve_accelerator(arch)) for arch in arches]
    gpu = resolve_accelerator(str(GPU_MODEL)) if backend in ("cuda", "auto") else None
    return Machines(accelerators, gpu)


def plan(args: argparse.Namespace, out: Path) -> Plan:
    """Check and parse the training config, derive the one to run (out/configs, written by
    write_plan once the output folder is locked), and decide backends, epochs and model."""
    _check_positive(args.epochs, "--epochs")
    _check_positive(args.train_subset, "--train-subset", allow_zero=True)
    backend = int_backend(args)
    device = args.device or TWIN_DEVICE[backend]
    if args.tiny:
        if args.config:
            raise UserInputError("--tiny", None, "uses its own synthetic config; leave out --config")
        doc, stem, source = tiny_config(), "tiny-mlp", None
        if args.train_subset:
            doc["synthetic"] = {**doc["synthetic"], "train": args.train_subset}
        cfg = _check_training(doc, None, bool(args.train_subset), backend, device)
    else:
        source = Path(args.config) if args.config else DEFAULT_CONFIG
        if not source.exists():
            raise UserInputError(str(source), None, "training config not found" +
                                 ("" if args.config else " (the default config; pass --config)"))
        doc = load_yaml(source)
        if not isinstance(doc, dict):
            raise UserInputError(str(source), None, "a training config must be a mapping")
        doc, stem = dict(doc), source.stem
        is_default = args.config is None
        subset = args.train_subset if args.train_subset is not None else (DEFAULT_TRAIN_SUBSET if is_default else None)
        if subset is not None:
            doc["train_subset"] = subset or None  # 0 means the whole training set
        if is_default and doc.get("test_subset") is None:
            doc["test_subset"] = DEFAULT_TEST_SUBSET
        cfg = _check_training(doc, source, args.train_subset is not None, backend, device)  # the model as written
        doc["model"] = _model_ref(doc, source)
    epochs = args.epochs if args.epochs is not None else (DEFAULT_EPOCHS if not args.tiny and not args.config else None)
    header = f"# written by nitisim run from {source or 'its --tiny settings'}\n"
    config = out / "configs" / f"{stem}.yaml"
    # The stages read the copy's settings from `cfg`: the copy is `doc` as parsed, with the model
    # named so it resolves from the copy's folder (the same file, so the same ModelSpec).
    cfg = dataclasses.replace(cfg, source=str(config), model_ref=doc["model"])
    return Plan(config, header + yaml.safe_dump(doc, sort_keys=False), stem, cfg, epochs, backend, device)


def write_plan(p: Plan) -> None:
    p.config.parent.mkdir(parents=True, exist_ok=True)
    p.config.write_text(p.config_text)


def _accelerators(args: argparse.Namespace) -> list[str]:
    if args.accelerators:
        return list(args.accelerators)
    from hwmodels.config import CONFIG_DIR  # the simulator's own notion of the shipped configs

    found = sorted(str(p) for p in Path(CONFIG_DIR).glob("*.yaml"))
    if not found:
        raise UserInputError(str(CONFIG_DIR), None, "no accelerator configs (*.yaml) to simulate")
    return found


CALIBRATION_PASSES = 3  # per window; two windows a float32 training apart (machine_model_step)


@dataclass(frozen=True)
class HostCalibration:
    """One calibration window of this host: the arguments of calibrate.cli.calibrate_host."""
    out: Path  # the YAML it writes
    name: str
    passes: int | None  # None: calibrate's default
    pool_with: Path | None  # samples of an earlier window whose calls it pools


def machine_model_step(backend: str | None, out: Path, *, window: int | None = None
                       ) -> tuple[str, HostCalibration | None, Path] | None:
    """(stage text, the calibration that makes it or None, YAML) of the model of the machine that
    measured: calibrate this host after a C-backend run, the shipped H200 config after a CUDA run;
    None for the numpy reference (its time is Python's, which no probe of the C library predicts).
    window 1 or 2: the first calibration window (its own YAML, host/<name>-window1.yaml) or the
    second, which pools the first's calls into the YAML the run simulates."""
    if backend == "cpu":
        from .calibrate.cli import default_name
        from .calibrate.samples import samples_path

        name = default_name()
        path = out / "host" / f"{name}.yaml"
        first = out / "host" / f"{name}-window1.yaml"
        target = first if window == 1 else path
        label = {None: "", 1: ", first window", 2: ", second window pooled with the first"}[window]
        return (f"calibrating this host (short probes of the C library{label}) -> {target}",
                HostCalibration(target, name, CALIBRATION_PASSES if window else None,
                                samples_path(first) if window == 2 else None), path)
    if backend == "cuda":
        return (f"the GPU's machine model: configs/{GPU_MODEL.relative_to(CONFIGS)} (public specifications)", None, GPU_MODEL)
    return None


def _stage(text: str) -> None:
    print(f"nitisim run: {text}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    busy = os.getloadavg()[0]  # before our own work: what else was running
    machines = check_machine_configs(_accelerators(args), int_backend(args))
    p = plan(args, out)  # every config is checked before anything is written
    # one `nitisim run` per output folder: a second one would rewrite the first's configs and report
    with locked_folder(out, "output folder"):
        write_plan(p)
        return _run(args, p, out, machines, busy)


def _run(args: argparse.Namespace, p: Plan, out: Path, machines: Machines, busy: float) -> int:
    from .calibrate.cli import calibrate_host
    from .contract.graph import build_graph
    from .report.cli import compare_runs
    from .report.tables import headline
    from .simulate_cli import simulate
    from .train.stage import train_fp32, train_int8, with_overrides

    cfg = with_overrides(p.train, epochs=p.epochs)
    int_dir, fp32_dir = out / "runs" / f"{p.stem}-int8", out / "runs" / f"{p.stem}-fp32"
    # stages: two trainings, the simulations, the comparison, and the machine model's (two
    # calibration windows and its simulation on the C backend; the shipped config's line and its
    # simulation on CUDA; none on the numpy reference), guessed from --backend (auto: as for cpu)
    # until the integer run says which backend it took
    extra = {"cpu": 3, "cuda": 2, "numpy": 0}
    accelerators = machines.accelerators
    total = 3 + len(accelerators) + extra.get(p.int_backend, 3)
    done = 0

    def stage(text: str, work: Callable[[], Any] | None) -> Any:
        nonlocal done
        done += 1
        _stage(f"[{done}/{total}] {text}")
        if work is None:
            return None
        # The stages' own output is progress here: stderr, so stdout is just the summary below.
        with contextlib.redirect_stdout(sys.stderr):
            return work()

    # A run redoes its own trainings (overwrite); the lock on `out` keeps others out.
    summary = stage(f"training {p.stem} in integers (backend {p.int_backend}) -> {int_dir}",
                    lambda: train_int8(cfg, int_dir, p.int_backend, data=args.data, overwrite=True))
    backend = summary["backend"]
    total = 3 + len(accelerators) + extra[backend]
    # Calibrate right after the integer run, the probes then see the machine in the state it trained
    # in, and again after the float32 twin, pooling both windows' calls: a shared VM's slow spells
    # can cover one whole window (docs/hwmodel.md). With the simulated graph, calibrate also probes
    # its GEMM and pooling kernels.
    graph = build_graph(cfg.model, cfg.batch, cfg.numerics)  # the graph simulated and probed

    def calibrate(step: HostCalibration) -> AcceleratorSpec:
        return calibrate_host(step.out, step.name, passes=step.passes, graph=graph, model_ref=p.model,
                              numerics_from=str(p.config), pool_with=step.pool_with)

    model = machine_model_step(backend, out, window=1)
    if model is not None:
        text, first, _ = model
        stage(text, None if first is None else lambda: calibrate(first))  # None: a shipped config (CUDA)
    stage(f"training its float32 twin (torch, {p.fp32_device}) -> {fp32_dir}",
          lambda: train_fp32(cfg, fp32_dir, p.fp32_device, data=args.data, overwrite=True))
    if model is not None:
        if model[1] is not None:
            text, second, _ = machine_model_step(backend, out, window=2)
            host = stage(text, lambda: calibrate(second))
        else:
            host = machines.gpu or _gpu_model()
        accelerators = [*accelerators, (model[2].stem, host)]
    sim_dirs = []
    for label, spec in accelerators:
        sim_dir = out / "sims" / label
        sim_dirs.append(sim_dir)
        stage(f"simulating {p.model} batch {p.batch} on {label} -> {sim_dir}",
              lambda spec=spec, sim_dir=sim_dir: simulate(spec, graph, sim_dir))
    _stage(f"[{total}/{total}] comparing -> {out}")
    comparison, files = compare_runs(int_dir, sim_dirs, fp32_dir, out)
    print(f"report: {files['html']}")
    for label, value in headline(comparison):
        print(f"  {label}: {value}")
    for note in comparison.notes:
        print(f"  note: {note}")
    if busy >= BUSY_LOAD:
        print(f"  note: load average {busy:.2f} when the run started: other processes shared the CPU, and the "
              "measured lower quartiles, like the probes', still include what interference most steps met; compare on an idle machine")
    return 0


def _gpu_model() -> AcceleratorSpec:
    from hwmodels.config import resolve_accelerator

    return resolve_accelerator(str(GPU_MODEL))
