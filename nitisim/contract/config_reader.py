"""The one strict config reader: a YAML file (or a mapping already loaded, with its source name) into
a frozen dataclass, every problem one `UserInputError(file, field path, problem)`.

Every config kind goes through it: models (contract/models.py), training configs
(nitisim/train/config.py), accelerators and their host sections (hwmodels/config.py, host.py,
area.py), sweep grids (hwmodels/sweep.py) and the training config `nitisim run` derives.

    read_yaml(path, parse)       the document of `path` (contract/strict_yaml.py) through
                                 parse(doc, source), which must return a frozen dataclass
    load_document(path)          the document alone, for a caller that edits it before parse
    Fields(src, doc, where)      one mapping level of a document; its readers name the field by
                                 path (`fp32.lr`, `layers[2].conv.kernel`, `buffers.ofmap.kib`)

Field readers, each on a key of a Fields (`Fields.int("batch")`) or, for list items and values
that are not under a key, on a value with its path (`integer(v, src, "input[1]")`):

    keys(required, optional)     unknown keys refused, required ones present
    int / integer                an integer (never a bool) in [minimum, maximum], at most 2**53
    positive_int                 an integer >= 1 (>= 0 with allow_zero), one message for any fault
    number                       a finite real in a range (a plain decimal string counts: YAML 1.1
                                 reads `5e-4`, without a dot, as a string)
    positive_number              a finite real > 0, one message for any fault
    choice / str / bool          one of a set of values; a non-empty string; true or false
    sub / items                  a nested mapping; a list, each item with its path `key[i]`
    get / has                    optional keys: the default when absent
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from .errors import UserInputError
from .strict_yaml import load_yaml_file
from .values import finite_number, quote

T = TypeVar("T")
# Sizes and counts meet floats wherever they are used (bandwidths, energies, seconds, learning
# rates); past 2**53 a float no longer holds them exactly, and far past it float() overflows.
MAX_INT = 2**53
_MISSING = object()
# A number YAML 1.1 leaves as a string: `5e-4` (an exponent without a dot) or a quoted decimal.
# `inf`, `nan`, `1_000` and padded text stay strings, and so stay refused.
_DECIMAL = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def read_yaml(path: str | Path, parse: Callable[[Any, str], T]) -> T:
    """parse(document of the YAML file `path`, str(path)): the one way a config file is read."""
    return frozen(parse(load_document(path), str(path)))


def load_document(path: str | Path) -> Any:
    """The parsed document of a config file, for a caller that edits it before parsing (a sweep's
    base accelerator, the training config `nitisim run` derives); see strict_yaml.py."""
    return load_yaml_file(path)


def frozen(spec: T) -> T:
    """`spec`, checked to be a frozen dataclass instance (what every config reader returns)."""
    params = getattr(type(spec), "__dataclass_params__", None)
    if not dataclasses.is_dataclass(spec) or params is None or not params.frozen:
        raise TypeError(f"a config reader returned {type(spec).__name__}, not a frozen dataclass")
    return spec


def kind_of(value: Any) -> str:
    """The YAML name of a value's type, for messages."""
    return {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)


def join(where: str | None, key: Any) -> str:
    """The path of `key` below `where`: `fp32` + `lr` is `fp32.lr`."""
    return f"{where}.{key}" if where else str(key)


# ------------------------------------------------------------------------------------------------
# Value readers: the value and its path; the Fields methods below fetch a key and call these.
# ------------------------------------------------------------------------------------------------
def integer(value: Any, src: str, where: str | None, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An int (not a bool) in [minimum, maximum], and at most MAX_INT."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError(src, where, f"must be an integer, got {kind_of(value)} {quote(value)}")
    if maximum is not None and not minimum <= value <= maximum:
        raise UserInputError(src, where, f"must be in {minimum}..{maximum}, got {quote(value)}")
    if value < minimum:
        raise UserInputError(src, where, f"must be at least {minimum}, got {quote(value)}")
    if value > MAX_INT:
        raise UserInputError(src, where, f"must be at most {MAX_INT} (2**53), got {quote(value)}")
    return value


def positive_int(value: Any, src: str, where: str | None, *, allow_zero: bool = False) -> int:
    """An int (not a bool) > 0 (>= 0 with allow_zero), at most MAX_INT; one message for any fault."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise UserInputError(src, where, f"must be a {'non-negative' if allow_zero else 'positive'} integer, "
                             f"got {quote(value)}")
    if value > MAX_INT:
        raise UserInputError(src, where, f"must be at most {MAX_INT} (2**53), got {quote(value)}")
    return value


def _real(value: Any) -> Any:
    """A plain decimal string as its float (YAML 1.1 reads `5e-4` as text); anything else as is."""
    return float(value) if isinstance(value, str) and _DECIMAL.fullmatch(value) else value


def number(value: Any, src: str, where: str | None, *, minimum: float | None = 0.0, strict: bool = True,
           maximum: float | None = None) -> float:
    """A finite int or float, > minimum (>= with strict=False) and <= maximum, as a float."""
    value = _real(value)
    if not finite_number(value):  # `.inf`, `.nan`, `1e999` parse as floats; every use divides or multiplies
        raise UserInputError(src, where, f"must be a finite number, got {quote(value)}")
    low_ok = minimum is None or (value > minimum if strict else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        if minimum == 0 and maximum is None:
            problem = "must be positive" if strict else "must not be negative"
        else:
            bounds = ([] if minimum is None else [f"{'>' if strict else '>='} {minimum:g}"]) + \
                ([] if maximum is None else [f"<= {maximum:g}"])
            problem = f"must be {' and '.join(bounds)}"
        raise UserInputError(src, where, f"{problem}, got {quote(value)}")
    return float(value)


def positive_number(value: Any, src: str, where: str | None) -> int | float:
    """A finite int or float > 0, kept as written (an int stays an int); one message for any fault."""
    value = _real(value)
    if not finite_number(value) or not value > 0:
        raise UserInputError(src, where, f"must be a positive number, got {quote(value)}")
    return value


def choice(value: Any, src: str, where: str | None, allowed: Iterable[Any]) -> Any:
    """`value` if it is one of `allowed`."""
    allowed = tuple(allowed)
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value against a set-like `allowed`
        ok = False
    if not ok:
        raise UserInputError(src, where, f"must be one of {', '.join(map(str, allowed))}, got {quote(value)}")
    return value


def text(value: Any, src: str, where: str | None) -> str:
    """A string with something in it besides spaces."""
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(src, where, f"must be a non-empty string, got {quote(value)}")
    return value


def boolean(value: Any, src: str, where: str | None) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(src, where, f"must be true or false, got {quote(value)}")
    return value


# ------------------------------------------------------------------------------------------------
# One mapping level of a document
# ------------------------------------------------------------------------------------------------
class Fields:
    """One mapping of a config document at path `where` of file `src`: typed readers by key.

    >>> f = Fields("a.yaml", {"batch": 0, "fp32": {"lr": ".inf"}})
    >>> f.int("batch", minimum=1)
    Traceback (most recent call last):
    nitisim.contract.errors.UserInputError: a.yaml: batch: must be at least 1, got 0
    >>> f.sub("fp32").number("lr")
    Traceback (most recent call last):
    nitisim.contract.errors.UserInputError: a.yaml: fp32.lr: must be a finite number, got '.inf'
    """

    def __init__(self, src: str, doc: Any, where: str | None = None, *, what: str = "must be a mapping"):
        self.src, self.where = str(src), where
        if not isinstance(doc, dict):
            raise UserInputError(self.src, where, f"{what}, got {kind_of(doc)}")
        self.doc = doc

    def path(self, key: Any) -> str:
        return join(self.where, key)

    def error(self, key: Any, problem: str) -> UserInputError:
        """The error for `key` of this mapping (for the mapping itself when key is None)."""
        return UserInputError(self.src, self.path(key) if key is not None else self.where, problem)

    def keys(self, required: Iterable[str], optional: Iterable[str] = ()) -> "Fields":
        """Refuse a key outside required + optional, then a missing required one (in the given
        order; a set's in sorted order)."""
        required = sorted(required) if isinstance(required, (set, frozenset)) else list(required)
        allowed = set(required) | set(optional)
        for key in self.doc:
            if key not in allowed:
                raise self.error(key, f"unknown key; expected one of {', '.join(sorted(map(str, allowed)))}")
        for key in required:
            if key not in self.doc:
                raise self.error(key, "missing required key")
        return self

    def has(self, key: str) -> bool:
        return key in self.doc

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)

    def _value(self, key: str, default: Any) -> Any:
        if key in self.doc:
            return self.doc[key]
        if default is _MISSING:
            raise self.error(key, "missing required key")
        return default

    def sub(self, key: str, default: Any = _MISSING) -> "Fields":
        """The nested mapping under `key` (`default`, e.g. {}, when absent)."""
        return Fields(self.src, self._value(key, default), self.path(key))

    def items(self, key: str, *, what: str = "must be a non-empty list") -> Iterator[tuple[str, Any]]:
        """(path, item) of each item of the non-empty list under `key`: `key[0]`, `key[1]`, ..."""
        values = self._value(key, _MISSING)
        if not isinstance(values, list) or not values:
            raise self.error(key, what)
        return ((f"{self.path(key)}[{i}]", v) for i, v in enumerate(values))

    def int(self, key: str, *, minimum: int = 1, maximum: int | None = None, default: Any = _MISSING) -> int:
        return integer(self._value(key, default), self.src, self.path(key), minimum=minimum, maximum=maximum)

    def optional_int(self, key: str, *, minimum: int = 1) -> int | None:
        """An integer, or None when absent or null."""
        value = self.doc.get(key)
        return None if value is None else integer(value, self.src, self.path(key), minimum=minimum)

    def positive_int(self, key: str, *, allow_zero: bool = False, default: Any = _MISSING) -> int:
        return positive_int(self._value(key, default), self.src, self.path(key), allow_zero=allow_zero)

    def number(self, key: str, *, positive: bool = True, minimum: float | None = None, strict: bool | None = None,
               maximum: float | None = None, default: Any = _MISSING) -> float:
        """A finite number: > 0 by default, >= 0 with positive=False, or the bounds given."""
        low = (0.0 if minimum is None else minimum)
        return number(self._value(key, default), self.src, self.path(key), minimum=low,
                      strict=positive if strict is None else strict, maximum=maximum)

    def positive_number(self, key: str, *, default: Any = _MISSING) -> int | float:
        return positive_number(self._value(key, default), self.src, self.path(key))

    def choice(self, key: str, allowed: Iterable[Any], *, default: Any = _MISSING) -> Any:
        return choice(self._value(key, default), self.src, self.path(key), allowed)

    def str(self, key: str, *, default: Any = _MISSING) -> str:
        return text(self._value(key, default), self.src, self.path(key))

    def bool(self, key: str, *, default: Any = _MISSING) -> bool:
        return boolean(self._value(key, default), self.src, self.path(key))
