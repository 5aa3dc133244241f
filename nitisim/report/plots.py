"""The report's figures, drawn with matplotlib's object API on the Agg/SVG backends.

Every function takes plain numbers and returns a `matplotlib.figure.Figure`; `to_svg` and `save`
turn one into text or files. matplotlib is imported inside the functions, so importing the report
package (and `nitisim --help`) never loads it, and no pyplot global state is touched: figures are
built with `Figure()` directly, so nothing leaks between reports or between test workers.

Each SVG gets its own hash salt (its name): element ids stay unique when several SVGs are inlined
into one HTML page, and the same input gives the same file.
"""
from __future__ import annotations

import io
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

PHASE_COLORS: Mapping[str, str] = MappingProxyType({
    "forward": "#4C72B0", "input_grad": "#DD8452", "weight_grad": "#55A868", "update": "#C44E52",
    "vector": "#8172B3",
})


def _figure(width_in: float, height_in: float, panels: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def to_svg(fig, salt: str) -> str:
    """The figure as standalone SVG text, deterministic for the same figure and salt."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def save(fig, path: Path, salt: str) -> None:
    """Write `path` as .svg or .png (by suffix)."""
    import matplotlib

    path = Path(path)
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        if path.suffix == ".svg":
            fig.savefig(path, format="svg", metadata={"Date": None})
        else:
            fig.savefig(path, format="png", dpi=120, metadata={"Software": None})


def training_curves(series: Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[float]]]):
    """Accuracy per epoch: one (label, epochs, train accuracy, test accuracy) per run."""
    fig, (ax,) = _figure(6.4, 3.6)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    for i, (label, epochs, train, test) in enumerate(series):
        color = colors[i % len(colors)]
        shown = [e + 1 for e in epochs]  # epochs are 0-based in metrics.jsonl; people count from 1
        ax.plot(shown, [100 * a for a in test], "-o", color=color, label=f"{label} test")
        ax.plot(shown, [100 * a for a in train], "--", color=color, alpha=0.7, label=f"{label} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return fig


def stacked_by_phase(title: str, layers: Sequence[str], by_phase: Mapping[str, Sequence[float]], ylabel: str):
    """One bar per layer, stacked by phase (forward, input_grad, weight_grad, update, vector)."""
    fig, (ax,) = _figure(max(5.0, 0.45 * len(layers) + 2.5), 3.6)
    positions = list(range(len(layers)))
    bottom = [0.0] * len(layers)
    for phase, values in by_phase.items():
        if not any(values):
            continue
        ax.bar(positions, values, bottom=bottom, color=PHASE_COLORS.get(phase), label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(positions, layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def energy_breakdown(labels: Sequence[str], by_phase: Mapping[str, Sequence[float]],
                     by_component: Mapping[str, Sequence[float]]):
    """Energy per step per accelerator in microjoules, stacked by phase and, when given, by component."""
    panels = 2 if by_component else 1
    fig, axes = _figure(min(11.0, max(5.0, 1.3 * len(labels) * panels + 2.5)), 3.8, panels)
    for ax, stacks, title in zip(axes, (by_phase, by_component), ("by phase", "by component")):
        bottom = [0.0] * len(labels)
        for i, (name, values_pj) in enumerate(stacks.items()):
            values_uj = [v / 1e6 for v in values_pj]
            if not any(values_uj):
                continue
            ax.bar(range(len(labels)), values_uj, bottom=bottom, label=name,
                   color=PHASE_COLORS.get(name, f"C{i % 10}"))
            bottom = [b + v for b, v in zip(bottom, values_uj)]
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("energy per step (uJ)")
        ax.set_title(f"Simulated energy {title}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def area_breakdown(labels: Sequence[str], int8_mm2: Mapping[str, Sequence[float]],
                   fp32_mm2: Mapping[str, Sequence[float]]):
    """Silicon area stacked by component, one panel per accelerator (each on its own scale: they
    differ by 50x): the integer accelerator and its float32 twin side by side."""
    n = max(1, len(labels))
    fig, axes = _figure(min(12.0, max(4.0, 2.3 * n + 1.0)), 3.8, n)
    for j, (ax, label) in enumerate(zip(axes, labels)):
        for x, stacks in ((0, int8_mm2), (1, fp32_mm2)):
            bottom = 0.0
            for i, (name, values) in enumerate(stacks.items()):
                if values[j]:
                    ax.bar(x, values[j], 0.6, bottom=bottom, color=f"C{i % 10}", label=name if x == 0 else None)
                    bottom += values[j]
        ax.set_xticks([0, 1], ["int8", "float32"], fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("area (mm$^2$)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Silicon area by component: integer accelerator and its float32 twin", fontsize=10)
    return fig


MAX_POINT_LABELS = 15  # per scatter panel: a deep graph's 100+ points would overprint each other


def _labelled_points(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points to name: those away from the origin (the many small vector points would
    overprint), and where there are more than MAX_POINT_LABELS of those, that many of the farthest
    out (x and y relative to their maxima; ties: the earlier point), one per cluster of near-equal points."""
    x_max, y_max = max(xs, default=0), max(ys, default=0)
    far = [i for i, (x, y) in enumerate(zip(xs, ys)) if x > 0.05 * x_max or y > 0.05 * y_max]
    if len(far) <= MAX_POINT_LABELS:
        return far
    size = [(xs[i] / x_max if x_max else 0.0) + (ys[i] / y_max if y_max else 0.0) for i in range(len(xs))]
    chosen: list[int] = []
    for i in sorted(far, key=lambda i: (-size[i], i)):
        # A deep graph repeats its blocks: identical layers sit on one spot, and one name says it.
        if not any(abs(xs[i] - xs[j]) <= 0.03 * x_max and abs(ys[i] - ys[j]) <= 0.03 * y_max for j in chosen):
            chosen.append(i)
        if len(chosen) == MAX_POINT_LABELS:
            break
    return sorted(chosen)


def measured_vs_simulated(panels: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[str],
                                                   float | None, float | None, float | None]]):
    """Scatter of measured seconds (y) against simulated cycles (x), one panel per accelerator.

    Each panel: (accelerator, cycles, seconds, point labels, slope, intercept, R^2); the fit line is
    drawn when slope is not None.
    """
    fig, axes = _figure(max(4.5, 4.2 * len(panels)), 3.8, max(1, len(panels)))
    for ax, (label, cycles, seconds, names, slope, intercept, r2) in zip(axes, panels):
        ms = [s * 1e3 for s in seconds]
        ax.scatter(cycles, ms, s=18, color="#4C72B0")
        for i in _labelled_points(cycles, ms):
            ax.annotate(names[i], (cycles[i], ms[i]), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
        if slope is not None and cycles:
            xs = [0.0, max(cycles)]
            ax.plot(xs, [(slope * x + intercept) * 1e3 for x in xs], "-", color="#C44E52",
                    label=f"fit, R$^2$ = {r2:.3f}" if r2 is not None else "fit")
            ax.legend(fontsize=8)
        ax.set_xlabel("simulated cycles per step")
        ax.set_ylabel("measured ms per step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    return fig


def storage_bars(categories: Sequence[str], int8_bytes: Sequence[float], fp32_bytes: Sequence[float]):
    """Grouped bars: bytes per storage category, integer graph versus float32, in MiB."""
    fig, (ax,) = _figure(max(5.5, 0.9 * len(categories) + 2), 3.6)
    width = 0.38
    xs = list(range(len(categories)))
    ax.bar([x - width / 2 for x in xs], [b / 2**20 for b in int8_bytes], width, label="integer (int8 graph)",
           color="#4C72B0")
    ax.bar([x + width / 2 for x in xs], [b / 2**20 for b in fp32_bytes], width, label="float32",
           color="#DD8452")
    ax.set_xticks(xs, categories, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("MiB per training step")
    ax.set_title("Storage: integer versus float32")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pareto(seconds: Sequence[float], energy_pj: Sequence[float], front: Sequence[int], labels: Sequence[str],
           title: str, area_mm2: Sequence[float] | None = None):
    """Energy against latency for every design point, area (when given) as the points' colour; the
    Pareto front's points ringed and labelled (joined when it is a two-objective front)."""
    fig, (ax,) = _figure(7.2 if area_mm2 is not None else 6.4, 4.4)
    ms = [s * 1e3 for s in seconds]
    uj = [e / 1e6 for e in energy_pj]
    if area_mm2 is not None:
        points = ax.scatter(ms, uj, s=22, c=list(area_mm2), cmap="viridis", label="design point")
        fig.colorbar(points, ax=ax, label="area (mm$^2$)")
    else:
        ax.scatter(ms, uj, s=16, color="#8C8C8C", label="design point")
    fx, fy = [ms[i] for i in front], [uj[i] for i in front]
    if area_mm2 is None:
        ax.plot(fx, fy, "-", color="#C44E52", linewidth=1)
    ax.scatter(fx, fy, s=70, facecolors="none", edgecolors="#C44E52", linewidths=1.2,
               label="Pareto front" + (" (latency, energy, area)" if area_mm2 is not None else ""))
    for i in front:
        ax.annotate(labels[i], (ms[i], uj[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ms per step")
    ax.set_ylabel("energy per step (uJ)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
