"""`nitisim models`: the built-in networks with their input shape, weights and MACs per step."""
from __future__ import annotations

from .contract.errors import UserInputError
from .contract.graph import build_graph
from .contract.models import builtin_models, resolve_model


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", help="a built-in name or a model YAML file (default: all built-ins)")
    parser.add_argument("--batch", type=int, default=256, help="batch size for the MAC counts (default 256)")


def main(args) -> int:
    if args.batch < 1:
        raise UserInputError("--batch", None, f"must be a positive integer, got {args.batch}")
    models = [resolve_model(args.model)] if args.model else list(builtin_models().values())
    rows = [("model", "input", "weights", "fwd MMAC", "step MMAC")]
    for model in models:
        g = build_graph(model, args.batch)  # shapes only: a model too large to train still lists
        weights = sum(g.tensor(w).size for w in g.weights)
        rows.append((model.name, "x".join(map(str, model.input_shape)), f"{weights:,}",
                     f"{g.macs('forward') / 1e6:,.0f}", f"{g.macs() / 1e6:,.0f}"))
    # columns as wide as their widest cell, two spaces apart, so a huge model's numbers never run together
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        print("  ".join(cells) + (f"   (batch {args.batch})" if j == 0 else ""))
    return 0
