"""report.html: one self-contained page (inline SVG figures, tables, no external files or scripts)."""
from __future__ import annotations

import html

from .join import Comparison
from .tables import Section, Table, headline

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } caption { caption-side: top; font-weight: bold; text-align: left; padding: .3em 0; }
.cap { color: #666; font-size: .85em; } .fig svg { max-width: 100%; height: auto; }
.notes { background: #fff7e0; border-left: 4px solid #e0b000; padding: .5em 1em; }
dl.head { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.head dt { font-weight: bold; } dl.head dd { margin: 0; }
"""


def inline_svg(svg: str) -> str:
    """An SVG document without its XML prolog and DOCTYPE, ready to sit inside HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def table_html(t: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in t.rows)
    cap = f'<div class="cap">{esc(t.caption)}</div>' if t.caption else ""
    # A shortened table (top.py) carries every row in a closed <details>, so the page stays self-contained.
    full = (f"<details><summary>all {len(t.full.rows)} rows</summary>{table_html(t.full)}</details>"
            if t.full is not None else "")
    return (f"<table><caption>{esc(t.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"{cap}{full}")


def render(c: Comparison, sections: list[Section], svgs: dict[str, str]) -> str:
    esc = html.escape
    title = f"nitisim report: {c.run.model}, batch {c.run.batch}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"]
    parts.append('<dl class="head">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in headline(c))
                 + "</dl>")
    if c.notes:
        parts.append('<div class="notes"><b>Notes</b><ul>' + "".join(f"<li>{esc(n)}</li>" for n in c.notes)
                     + "</ul></div>")
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2><p>{esc(s.text)}</p>")
        parts += [f'<div class="fig" id="fig-{esc(name)}">{inline_svg(svgs[name])}</div>'
                  for name in s.figures if name in svgs]
        parts += [table_html(t) for t in s.tables]
    parts.append("</body></html>\n")
    return "\n".join(parts)
