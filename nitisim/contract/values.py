"""Checks and quoting shared by every reader of values a user wrote (configs, grids, data files).

`finite_number` is the one test of "a real number" the config readers apply before their own
range checks: YAML reads `.inf`, `.nan` and `1e999` as floats, and an integer too large for a
float overflows the first time a simulator divides by it, so all of them are refused up front.

`path_exists` is Path.exists() for a path a config names: a name the OS cannot even look up (too
long, or holding a NUL byte, which YAML's "\0" escape writes) does not exist, rather than raising.

`quote` is how an error message shows a value: its repr, cut to QUOTE_CHARS characters with an
ellipsis, built by `reprlib` so a huge or deeply nested value costs no more than a short one.
`shorten` cuts text the same way; `one_line` only folds its whitespace, for text whose every word
the message needs (an exception's own description).
"""
from __future__ import annotations

import math
import os
import reprlib
from pathlib import Path
from typing import Any

QUOTE_CHARS = 80  # one terminal line minus the file and field the message already names


def finite_number(value: Any) -> bool:
    """True for an int or float (never a bool) that is finite as a float.

    >>> [finite_number(v) for v in (3, 0.5, True, "1", float("inf"), float("nan"), 10**400)]
    [True, True, False, False, False, False, False]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond the float range
        return False


def path_exists(path: str | os.PathLike) -> bool:
    """Path(path).exists(), False (not an exception) for a name too long or holding a NUL byte.

    >>> path_exists("/"), path_exists("a\\x00b"), path_exists("a" * 5000)
    (True, False, False)
    """
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # ENAMETOOLONG, ELOOP, EACCES on a parent; embedded null byte
        return False


class _BoundedRepr(reprlib.Repr):
    """reprlib with room for what a config holds, and ints too long for repr() shown by size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 12
        self.maxdict = 8
        self.maxstring = QUOTE_CHARS + 2
        self.maxlong = self.maxother = QUOTE_CHARS

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # past sys.get_int_max_str_digits()
            return f"<{x.bit_length()}-bit integer>"


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """repr(value) for error messages, at most `limit` characters (cut ones end in '...').

    >>> quote("edge"), quote(list(range(100)))
    ("'edge'", '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...]')
    >>> len(quote("x" * 10_000))
    80
    """
    return shorten(_BoundedRepr().repr(value), limit)


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` on one line, at most `limit` characters (cut text ends in '...').

    >>> shorten("could not convert string to float: '" + "9" * 200 + "'", 40)
    "could not convert string to float: '9..."
    """
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, folded to one space.

    >>> one_line(" int32 overflow\\n  in layer fc2 ")
    'int32 overflow in layer fc2'
    """
    return " ".join(text.split())


def terminal_line(text: str) -> str:
    """`text` as one line safe to print: whitespace folded, and any other character a terminal would
    act on (NUL, escape sequences) shown as its Python escape, since error lines quote user input.

    >>> print(terminal_line("lenet\\x00.yaml: \\x1b[2J gone"))
    lenet\\x00.yaml: \\x1b[2J gone
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in one_line(text))
