"""A one-line progress bar on stderr with images/s: plain text and `\\r`, no dependency.

Quiet when stderr is not a terminal (logs and CI get the per-epoch line only), and throttled to
a few redraws a second so drawing never costs a measurable share of a step.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW_S = 0.25
_WIDTH = 24  # bar characters


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._drawn = False

    def update(self, label: str, done: int, total: int, images_per_second: float, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < _REDRAW_S:
            return
        self._last = now
        filled = _WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (_WIDTH - filled)
        self.stream.write(f"\r{label} [{bar}] {done}/{total} {images_per_second:,.0f} img/s {extra}\033[K")
        self.stream.flush()
        self._drawn = True

    def line(self, text: str) -> None:
        """A permanent line (the epoch summary), clearing a drawn bar first."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
