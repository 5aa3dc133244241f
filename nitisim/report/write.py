"""Writing a report folder: report.html, report.md, compare.json, plots/*.svg and, for tables shortened
to their largest rows (top.py), tables/*.csv with every row."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from . import html as html_writer
from . import markdown as md_writer
from .figures import figures
from .join import Comparison
from .numbers import to_json
from .tables import sections


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(c: Comparison, out: str | Path) -> dict[str, Path]:
    """Write every report file into `out` (created if needed); returns {kind: path}."""
    out = Path(out)
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    parts = sections(c)
    svgs = figures(c)
    files = {}
    for name, svg in svgs.items():
        _atomic_write(plots_dir / f"{name}.svg", svg)
        files[f"plot:{name}"] = plots_dir / f"{name}.svg"
    for t in (t for s in parts for t in s.tables if t.full is not None):
        (out / "tables").mkdir(exist_ok=True)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows((t.full.columns,) + t.full.rows)
        _atomic_write(out / "tables" / t.csv, buf.getvalue())
        files[f"table:{t.csv}"] = out / "tables" / t.csv
    _atomic_write(out / "report.html", html_writer.render(c, parts, svgs))
    _atomic_write(out / "report.md", md_writer.render(c, parts, {n: f"plots/{n}.svg" for n in svgs}))
    _atomic_write(out / "compare.json", json.dumps(to_json(c), indent=2) + "\n")
    files.update(html=out / "report.html", md=out / "report.md", json=out / "compare.json")
    return files
