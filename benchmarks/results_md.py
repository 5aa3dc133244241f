"""Writes one benchmark's section into docs/results.md, leaving the other sections as they are.

Each benchmark owns the text between `<!-- BEGIN name -->` and `<!-- END name -->`; a section is
replaced whole, with the command that produced it, the machine and the date, so every number in
docs/results.md carries its provenance.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
HEADER = "# Measured results\n\nEvery table below was written by the benchmark named in its section; rerun the command to refresh it.\n"


def machine() -> str:
    """CPU model and core count (and the GPU when torch sees one), for the provenance line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def provenance(command: str | None = None) -> str:
    command = command or " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    today = datetime.date.today().isoformat()
    return f"Command: `{command}`  \nMachine: {machine()}  \nDate: {today}\n"


def write_section(name: str, title: str, body: str, command: str | None = None, path: Path = RESULTS) -> Path:
    """Replace (or append) section `name` of docs/results.md with `title`, provenance and `body`."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- BEGIN {name} -->\n## {title}\n\n{provenance(command)}\n{body.rstrip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
