"""Per-step overhead of the float32 twin trainer over a bare torch loop of the same network.

Times Fp32Trainer.train_batch (uint8 NHWC batches in, correct count out, as run_training calls it)
against a bare loop of the same SpecNet and optimizer on inputs converted beforehand, in one
process, so the ratio holds even on a shared, noisy machine. Two schedules:

  interleaved  every contender takes one step in turn (order alternating), median step time each;
               the most robust to load that comes and goes
  blocks       every contender runs all the steps back to back, alternating order over rounds;
               closer to a real epoch (one model's data stays in cache)

`--also PATH` adds a second trainer loaded from another copy of nitisim/train/fp32.py (e.g.
`git show REV:nitisim/train/fp32.py > /tmp/fp32_old.py`) for a before/after comparison in the
same run. Prints the tables and writes them to docs/results.md (section `fp32-overhead`).

    python benchmarks/fp32_overhead.py [configs/train/fashion-lenet.yaml] [--steps 40] [--rounds 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from nitisim.datasets.transforms import float_normalized, to_int8  # noqa: E402
from nitisim.contract.shipped import CONFIGS  # noqa: E402
from nitisim.train.config import load_config  # noqa: E402
from nitisim.train.data import epoch_batches, float_stats, load_for_config  # noqa: E402
from nitisim.train.fp32 import Fp32Trainer, SpecNet  # noqa: E402
from results_md import write_section  # noqa: E402


def load_trainer_class(path: Path):
    spec = importlib.util.spec_from_file_location("nitisim.train._fp32_also", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Fp32Trainer


def reference_inputs(cfg, images: np.ndarray) -> torch.Tensor:
    if cfg.input_path == "float":
        return torch.from_numpy(float_normalized(images, *float_stats(cfg.dataset, cfg.model.input_shape[2])))
    m, e = to_int8(images)
    return torch.from_numpy(np.ldexp(m.astype(np.float32), e))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(CONFIGS / "train" / "fashion-lenet.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="training batches per round (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each schedule (default 3)")
    parser.add_argument("--also", type=Path, help="another fp32.py whose Fp32Trainer joins the race")
    parser.add_argument("--data", help="dataset folder (default: discovery)")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    ds = load_for_config(cfg, args.data)
    batches = [b for b, _ in zip(epoch_batches(ds, cfg, 0), range(args.steps))]
    trainer = Fp32Trainer(cfg, "cpu")
    contenders = {"trainer": trainer}
    if args.also:
        contenders[f"trainer ({args.also.name})"] = load_trainer_class(args.also)(cfg, "cpu")
    for t in contenders.values():
        t.epoch_info(0)

    torch.manual_seed(cfg.seed)
    net = SpecNet(cfg.model).train()
    o = cfg.fp32
    opt = torch.optim.SGD(net.parameters(), lr=trainer.optimizer.param_groups[0]["lr"], momentum=o.momentum,
                          weight_decay=o.weight_decay)
    pre = [(reference_inputs(cfg, images), torch.from_numpy(labels.astype(np.int64))) for _, images, labels in batches]

    def bare(i: int) -> None:
        x, y = pre[i]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    steps = {"bare torch": bare}
    for name, t in contenders.items():
        steps[name] = lambda i, t=t: t.train_batch(batches[i][1], batches[i][2], 0, batches[i][0])
    names = list(steps)
    for name in names:  # warm-up: allocations and oneDNN primitives
        for i in range(min(3, len(batches))):
            steps[name](i)

    per_step = {k: [] for k in names}
    for r in range(args.rounds):
        for i in range(len(batches)):
            for name in (names if (r + i) % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                steps[name](i)
                per_step[name].append(time.perf_counter() - t0)
    per_block = {k: [] for k in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for i in range(len(batches)):
                steps[name](i)
            per_block[name].append(time.perf_counter() - t0)

    b = cfg.batch
    lines = [f"{cfg.model.name} batch {b}, {len(batches)} steps x {args.rounds} rounds, torch {torch.__version__} "
             f"{torch.get_num_threads()} threads, all contenders in one process."
             + (f" `{args.also.name}` is another nitisim/train/fp32.py (`git show REV:nitisim/train/fp32.py > FILE`)."
                if args.also else ""), "",
             "| contender | interleaved img/s (median step) | ratio to bare | blocks img/s (median) | ratio to bare "
             "(median of rounds) |", "|---|---|---|---|---|"]
    bare_step, bare_block = np.median(per_step["bare torch"]), np.array(per_block["bare torch"])
    for name in names:
        s, blk = np.median(per_step[name]), np.array(per_block[name])
        lines.append(f"| {name} | {b / s:,.0f} | {bare_step / s:.3f} | {b * len(batches) / np.median(blk):,.0f} "
                     f"| {np.median(bare_block / blk):.3f} |")

    test_x, test_y = ds.test_images[:5000], ds.test_labels[:5000]
    t_eval = {}
    for name, t in contenders.items():
        t.evaluate(test_x, test_y)
        t0 = time.perf_counter()
        t.evaluate(test_x, test_y)
        t_eval[name] = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        xs = [reference_inputs(cfg, test_x[s:s + cfg.eval_batch]) for s in range(0, len(test_y), cfg.eval_batch)]
        t0 = time.perf_counter()
        for x in xs:
            net(x).argmax(1)
        t_bare = time.perf_counter() - t0
    lines += ["", f"Evaluate, {len(test_y)} test images in slices of {cfg.eval_batch}: bare {len(test_y) / t_bare:,.0f} "
              "img/s; " + "; ".join(f"{name} {len(test_y) / s:,.0f} img/s" for name, s in t_eval.items())]
    body = "\n".join(lines)
    print(body)
    write_section("fp32-overhead", "Float32 twin trainer vs a bare torch loop (benchmarks/fp32_overhead.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
