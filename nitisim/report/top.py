"""Keeping deep graphs readable: the largest rows of a per-layer listing, the rest summed in one row.

A 50-layer ResNet has about 170 (layer) rows and 300 (layer, phase) points; a table or a bar chart
with all of them cannot be read. Listings up to MAX_ROWS are shown whole (LeNet, VGG: unchanged);
longer ones keep their SHOWN largest entries and one "other N layers" entry with the remainder, so
every total still adds up. The whole listing goes to a CSV file beside the report.
"""
from __future__ import annotations

from typing import Sequence

MAX_ROWS = 30  # a listing up to this long is shown whole
SHOWN = 20  # entries kept from a longer one (plus the summed remainder)


def largest(sizes: Sequence[float], limit: int = MAX_ROWS, shown: int = SHOWN) -> list[int] | None:
    """Indices of the `shown` largest sizes (ties: the earlier first), largest first; None when
    len(sizes) <= limit, meaning: show everything as it is."""
    if len(sizes) <= limit:
        return None
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))[:shown]


def other_label(count: int, what: str = "layers") -> str:
    return f"other {count} {what}"
