"""The backend registry: the names (numpy, cpu, cuda, auto), how each kernel table loads, and how
each backend's node times are taken. The one place a kernel table is chosen by name.

`numpy` is the reference executor (nitisim.contract.reference). `cpu` and `cuda` are built by
`gpu_backend.backends.cpu_kernel_table` / `cuda_kernel_table`, imported only when asked for, so the
integer path never needs a compiler, a GPU or the gpu_backend package to exist. `auto` takes the
first usable of cuda, cpu, numpy and says which one it took and why the others were passed over.

An explicit `--backend cpu` or `--backend cuda` that cannot be loaded is an error: falling back to
numpy silently would make a benchmark measure the wrong thing.

`node_clock(name)` is how a backend's per-node times are taken: host laps where kernel calls
return when their work is done (numpy, cpu), CUDA events where they return at launch (cuda).
"""
from __future__ import annotations

import importlib
import sys
from types import MappingProxyType
from typing import Callable, Mapping

from .contract.errors import UserInputError
from .contract.executor import HostNodeClock, NodeClock

BACKENDS: tuple[str, ...] = ("numpy", "cpu", "cuda", "auto")
_AUTO_ORDER: tuple[str, ...] = ("cuda", "cpu")  # fastest first; numpy is always there
# compiled backend -> the gpu_backend.backends function that builds its table
_CONSTRUCTORS: Mapping[str, str] = MappingProxyType({"cpu": "cpu_kernel_table", "cuda": "cuda_kernel_table"})


class BackendUnavailable(RuntimeError):
    """A compiled backend could not be loaded; the message says why."""


def kernel_table(name: str) -> Mapping:
    """The kernel table of backend `name` (numpy, cpu, cuda); raises whatever stops it loading."""
    if name == "numpy":
        return _numpy_table()
    if name not in _CONSTRUCTORS:
        raise KeyError(f"unknown backend {name!r}; known: numpy, {', '.join(_CONSTRUCTORS)}")
    return getattr(importlib.import_module("gpu_backend.backends"), _CONSTRUCTORS[name])()


def _compiled_table(name: str) -> Mapping:
    try:
        module = importlib.import_module("gpu_backend.backends")
    except ImportError as err:
        raise BackendUnavailable(f"gpu_backend.backends cannot be imported ({err})") from err
    try:
        table = getattr(module, _CONSTRUCTORS[name])()
    except Exception as err:  # noqa: BLE001 - any load failure (no library, no GPU, ABI) means unusable
        raise BackendUnavailable(f"{type(err).__name__}: {err}") from err
    if not isinstance(table, Mapping) or not table:
        raise BackendUnavailable(f"{_CONSTRUCTORS[name]}() returned {type(table).__name__}, not a kernel table")
    return table


def node_clock(name: str) -> NodeClock:
    """The per-node clock of resolved backend `name` (numpy, cpu, cuda)."""
    if name == "cuda":
        return importlib.import_module("gpu_backend.cuda").device_node_clock()
    if name in ("numpy", "cpu"):
        return HostNodeClock()
    raise ValueError(f"no node clock for backend {name!r}")


def _numpy_table() -> Mapping:
    from .contract.reference import REFERENCE_KERNELS

    return REFERENCE_KERNELS


def resolve_backend(name: str, log: Callable[[str], None] | None = None) -> tuple[Mapping, str]:
    """(kernel table, resolved name) for `--backend name`.

    `log` receives the line saying what `auto` chose (default: stderr). Explicit backends that
    cannot be loaded raise UserInputError("--backend", name, reason).
    """
    if name not in BACKENDS:
        raise UserInputError("--backend", None, f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "numpy":
        return _numpy_table(), "numpy"
    if name in _AUTO_ORDER:
        try:
            return _compiled_table(name), name
        except BackendUnavailable as err:
            raise UserInputError("--backend", name, f"backend unavailable: {err}") from None
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    passed: list[str] = []
    for candidate in _AUTO_ORDER:
        try:
            table = _compiled_table(candidate)
        except BackendUnavailable as err:
            passed.append(f"{candidate}: {err}")
            continue
        log(f"nitisim: backend auto -> {candidate}" + (f" (skipped {'; '.join(passed)})" if passed else ""))
        return table, candidate
    log(f"nitisim: backend auto -> numpy (skipped {'; '.join(passed)})")
    return _numpy_table(), "numpy"
