"""report.md: the same sections and tables as report.html, figures linked as files in plots/."""
from __future__ import annotations

from .join import Comparison
from .tables import Section, Table, headline


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_md(t: Table) -> str:
    lines = [f"**{t.title}**", "", "| " + " | ".join(map(_cell, t.columns)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.columns))) + "|"]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"_{t.caption}_"]
    return "\n".join(lines)


def render(c: Comparison, sections: list[Section], figure_files: dict[str, str]) -> str:
    """Markdown text; `figure_files` maps figure name -> path relative to the report."""
    out = [f"# nitisim report: {c.run.model}, batch {c.run.batch}", ""]
    out += [f"- **{label}**: {value}" for label, value in headline(c)]
    if c.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in c.notes]
    for s in sections:
        out += ["", f"## {s.title}", "", s.text, ""]
        out += [f"![{name}]({figure_files[name]})" for name in s.figures if name in figure_files]
        for t in s.tables:
            out += ["", table_md(t)]
    out.append("")
    return "\n".join(out)
