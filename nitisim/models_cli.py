"""`nitisim models`: the built-in networks with their input shape, weights and MACs per step."""
from __future__ import annotations

from .graph import build_graph
from .models import builtin_models, resolve_model


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", help="a built-in name or a model YAML file (default: all built-ins)")
    parser.add_argument("--batch", type=int, default=256, help="batch size for the MAC counts (default 256)")


def main(args) -> int:
    models = [resolve_model(args.model)] if args.model else list(builtin_models().values())
    print(f"{'model':<14}{'input':>14}{'weights':>12}{'fwd MMAC':>12}{'step MMAC':>12}   (batch {args.batch})")
    for model in models:
        g = build_graph(model, args.batch)
        weights = sum(g.tensor(w).size for w in g.weights)
        shape = "x".join(map(str, model.input_shape))
        print(f"{model.name:<14}{shape:>14}{weights:>12,}{g.macs('forward') / 1e6:>12,.0f}{g.macs() / 1e6:>12,.0f}")
    return 0
