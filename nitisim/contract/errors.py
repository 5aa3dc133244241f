"""Errors that reach the user as one line (file, field, problem) and exit status 2.

Library code raises `UserInputError` for anything a user wrote or supplied (a config, a dataset
file, a command-line value). The CLI catches it, prints `str(err)` on one line and exits 2, so a
bad input never produces a traceback. Internal bugs stay ordinary exceptions.
"""
from __future__ import annotations


class UserInputError(Exception):
    """A problem with user input, reported as `<source>: <field>: <message>`.

    >>> str(UserInputError("configs/a.yaml", "layers[2].kernel", "must be a positive integer"))
    'configs/a.yaml: layers[2].kernel: must be a positive integer'
    """

    def __init__(self, source: str, field: str | None, message: str):
        self.source = str(source)
        self.field = field
        self.message = message
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {message}")


class IntegerOverflowError(ArithmeticError):
    """An integer accumulator left its declared range; NITI arithmetic never wraps."""
