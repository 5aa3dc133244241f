"""Finding a dataset's folder on disk, and the file names each dataset may use.

Search order (first hit wins):
  1. the explicit `--data PATH` argument: the dataset folder itself, or a folder holding a subfolder
     named like the dataset. Given but empty is an error, never a silent fall-back elsewhere.
  2. `$NITISIM_DATA`, read the same way; a shared data root, so a miss falls through.
  3. the system copy: `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`).
  4. `~/.cache/nitisim/<name>`.
A folder "holds" a dataset when at least one of its files is there; the loader then reports any
file still missing by name, so a half-copied folder is an error rather than skipped over.
Nothing is downloaded: training machines are often offline, and the error says how to fix it.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ..contract.errors import UserInputError

DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "mnist", "cifar10")
ENV_VAR = "NITISIM_DATA"

# Subfolder names under a data root that count as "named like the dataset" (torchvision and
# Keras layouts included). Immutable: module-level state must not be editable by callers.
ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10", "cifar-10-batches-py", "cifar-10-batches-bin"),
})

SYSTEM_DIRS: Mapping[str, str] = MappingProxyType({
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
})

# Role -> accepted file names, preferred first. Both the hyphenated upstream spelling and the
# dotted one some mirrors use, each raw or gzipped (the reader looks at magic bytes, not names).
_IDX_STEMS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "train-images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train-labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test-images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test-labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
})
IDX_ROLES: tuple[str, ...] = tuple(_IDX_STEMS)

CIFAR_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_SUBDIRS: tuple[str, ...] = ("cifar-10-batches-bin", "cifar-10-batches-py")  # bin first, as in cifar_format


def _probe(path: Path, check: str) -> bool:
    """path.is_dir() / is_file() / exists(), with an OS refusal (no permission to look into the
    folder, a name too long) turned into one line naming the folder that could not be read."""
    try:
        return getattr(path, check)()
    except OSError as err:  # pathlib answers False only for "no such file"; EACCES and friends raise
        blocked = path.parent if isinstance(err, PermissionError) else path  # searching a folder needs its x bit
        raise UserInputError(str(blocked), "dataset", f"cannot read this folder: {err.strerror or err}") from None
    except ValueError as err:  # a NUL byte in the name
        raise UserInputError(str(path), "dataset", f"not a usable path ({err})") from None


def is_dir(path: Path) -> bool:
    """Path.is_dir(), but a folder the OS will not let us look into is a UserInputError naming it."""
    return _probe(path, "is_dir")


def is_file(path: Path) -> bool:
    """Path.is_file(), but a folder the OS will not let us look into is a UserInputError naming it."""
    return _probe(path, "is_file")


def exists(path: Path) -> bool:
    """Path.exists(), but a folder the OS will not let us look into is a UserInputError naming it."""
    return _probe(path, "exists")


def idx_names(role: str) -> tuple[str, ...]:
    """Accepted file names for one MNIST-family file, preferred first.

    >>> idx_names("test-labels")
    ('t10k-labels-idx1-ubyte', 't10k-labels-idx1-ubyte.gz', 't10k-labels.idx1-ubyte', 't10k-labels.idx1-ubyte.gz')
    """
    return tuple(n for stem in _IDX_STEMS[role] for n in (stem, stem + ".gz"))


def find_idx_file(folder: Path, role: str) -> Path | None:
    """The first existing file for `role` in `folder`, or None."""
    for name in idx_names(role):
        if is_file(folder / name):
            return folder / name
    return None


def cifar_format(folder: Path) -> str | None:
    """'bin' or 'py' when `folder` holds CIFAR-10 batch files directly, else None.

    The binary batches win when both are present: reading them involves no unpickling at all.
    """
    if any(is_file(folder / f"{b}.bin") for b in CIFAR_BATCHES):
        return "bin"
    if any(is_file(folder / b) for b in CIFAR_BATCHES):
        return "py"
    return None


def _holds(name: str, folder: Path) -> Path | None:
    """The folder with `name`'s files: `folder` itself, or (CIFAR) its extracted-tarball subfolder."""
    if not is_dir(folder):
        return None
    if name == "cifar10":
        if cifar_format(folder):
            return folder
        for sub in _CIFAR_SUBDIRS:
            if cifar_format(folder / sub):
                return folder / sub
        return None
    return folder if any(find_idx_file(folder, role) for role in IDX_ROLES) else None


def _other_dataset_named(name: str, folder: Path) -> str | None:
    """Another dataset whose alias is this folder's name (MNIST and Fashion-MNIST share file names)."""
    for other, aliases in ALIASES.items():
        if other != name and folder.name.lower() in {a.split("/")[0].lower() for a in aliases}:
            return other
    return None


def _search_root(name: str, root: Path, shared: bool) -> Path | None:
    """`root` itself when it holds the dataset, else its first subfolder named like the dataset.

    `shared` marks a data root used for every dataset ($NITISIM_DATA): there a folder named after
    another dataset (say `mnist` when Fashion-MNIST is wanted) is not taken as this one, because the
    two use identical file names and the mix-up would otherwise train on the wrong data silently.
    """
    if not (shared and _other_dataset_named(name, root)):
        hit = _holds(name, root)
        if hit:
            return hit
    for alias in ALIASES[name]:
        hit = _holds(name, root / alias)
        if hit:
            return hit
    return None


def _fix_hint(name: str, cache: Path) -> str:
    files = {
        "cifar10": "extract cifar-10-python.tar.gz or cifar-10-binary.tar.gz",
        "mnist": "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
        "fashion-mnist": "put the four *-idx?-ubyte.gz files",
    }[name]
    system = "`apt-get install dataset-fashion-mnist`, " if name == "fashion-mnist" else ""
    return f"fix: {system}pass --data PATH, set {ENV_VAR}=PATH, or {files} into {cache}"


def _looked_for(name: str) -> str:
    if name == "cifar10":
        return "data_batch_1..5 and test_batch (.bin or pickled), or a cifar-10-batches-py/-bin subfolder"
    return f"train-images-idx3-ubyte[.gz] and the other three IDX files, or a subfolder {ALIASES[name][0]}"


def check_name(name: str) -> str:
    """`name` if it is a known dataset, else UserInputError listing the known ones."""
    if name not in DATASET_NAMES:
        raise UserInputError("dataset", None, f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return name


def _expand(value: str | Path, what: str) -> Path:
    """Path(value) with a leading ~ or ~user expanded; an unknown user is the user's error."""
    try:
        return Path(value).expanduser()
    except RuntimeError as err:  # "Could not determine home directory."
        raise UserInputError(str(value), what, f"cannot expand ~: {err}") from None


def find_dataset(
    name: str,
    data_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: str | Path | None = None,
    system_dirs: Mapping[str, str] | None = None,
) -> Path:
    """The folder holding dataset `name`, searched in the order in the module docstring.

    `environ`, `home` and `system_dirs` default to os.environ, Path.home() and SYSTEM_DIRS; tests
    pass their own instead of touching the real machine.
    """
    check_name(name)
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else Path(home)
    system_dirs = SYSTEM_DIRS if system_dirs is None else system_dirs
    wanted = _looked_for(name)

    if data_path is not None:
        if str(data_path).strip() == "":
            raise UserInputError("--data", None, "is empty; give the dataset folder, or leave --data out to search "
                                 f"${ENV_VAR}, the system copy and ~/.cache/nitisim")
        root = _expand(data_path, "--data")
        hit = _search_root(name, root, shared=False)
        if hit:
            return hit
        why = "does not exist" if not exists(root) else f"holds no {name} files (looked for {wanted})"
        raise UserInputError(str(root), "--data", f"{why}; point --data at the {name} folder or its parent")

    tried: list[str] = ["--data: not given"]
    env_root = environ.get(ENV_VAR, "")
    if env_root:
        root = _expand(env_root, f"${ENV_VAR}")
        hit = _search_root(name, root, shared=True)
        if hit:
            return hit
        tried.append(f"${ENV_VAR}={root}: " + ("does not exist" if not exists(root) else f"no {name} folder"))
    else:
        tried.append(f"${ENV_VAR}: not set")

    system = system_dirs.get(name)
    if system:
        hit = _holds(name, Path(system))
        if hit:
            return hit
        tried.append(f"{system}: " + ("absent" if not exists(Path(system)) else "no files"))

    cache = home / ".cache" / "nitisim" / name
    hit = _holds(name, cache)
    if hit:
        return hit
    tried.append(f"{cache}: " + ("absent" if not exists(cache) else "no files"))
    raise UserInputError(name, "dataset", f"not found; tried {'; '.join(tried)}; {_fix_hint(name, cache)}")
