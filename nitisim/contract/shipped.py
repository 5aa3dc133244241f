"""Where the shipped configs live: package data inside nitisim, so an installed nitisim finds them.

The repository's top-level `configs/` is a link to this folder, so the paths the README gives
(`configs/train/fashion-lenet.yaml`) work from a checkout, and `pip install .` carries the same
files into site-packages.
"""
from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # train/, models/, accelerators/, hosts/, sweeps/
