"""Where the shipped configs live, and how a config name finds its file.

CONFIGS is package data inside nitisim, so an installed nitisim finds its configs from any folder;
the repository's top-level `configs/` is a link to it, so the paths the README gives
(`configs/train/fashion-lenet.yaml`) work from a checkout too.

A name (`edge-16x16`, `h200-sxm`) resolves to `configs/<kind>/<name>.yaml` in the working
directory first (a project's own configs shadow the shipped ones), then in CONFIGS. A path (a
`.yaml` name, or any file that exists) is taken as written, relative to the file that names it
when there is one.
"""
from __future__ import annotations

from pathlib import Path

from .values import path_exists

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # train/, models/, accelerators/, hosts/, sweeps/
KINDS = ("train", "models", "accelerators", "hosts", "sweeps")


def search_path(kind: str) -> tuple[Path, ...]:
    """The folders a `kind` name is looked up in, in order: the working directory's, then the shipped."""
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r}; expected one of {KINDS}")
    return (Path.cwd() / "configs" / kind, CONFIGS / kind)


def find_shipped(kind: str, ref: str, relative_to: str | Path | None = None) -> Path | None:
    """The file `ref` names: a path (relative to the folder of `relative_to` when given), else the
    first `<name>.yaml` on search_path(kind); None when there is none."""
    path = Path(ref)
    if relative_to is not None and not path.is_absolute():
        path = Path(relative_to).parent / path
    if path.suffix in (".yaml", ".yml") or path_exists(path):
        return path
    for folder in search_path(kind):
        candidate = folder / f"{ref}.yaml"
        if path_exists(candidate):
            return candidate
    return None


def shipped_names(kind: str) -> list[str]:
    """Every name a `kind` config resolves by (the working directory's and the shipped), sorted."""
    return sorted({p.stem for folder in search_path(kind) for p in folder.glob("*.yaml")})
