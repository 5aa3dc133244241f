"""The `nitisim` command: subcommands, each in its own module, dispatched lazily.

Each subcommand module provides `add_arguments(parser)` and `main(args) -> int`. A module is
imported only when its subcommand runs, so `nitisim --help` needs no compiled library, no GPU and
no torch. A `UserInputError` anywhere becomes one line on stderr and exit status 2, and so does an
`IntegerOverflowError` (NITI arithmetic never wraps: a run stops at the first overflow, and the
executor's message names the graph node and layer and what to change).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .contract.errors import IntegerOverflowError, UserInputError
from .contract.values import terminal_line

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("nitisim.train.cli", "train a model with integer-only NITI arithmetic (or --arith fp32)"),
    "simulate": ("nitisim.simulate_cli", "simulate a training step on an accelerator config"),
    "compare": ("nitisim.report.cli", "join a training run with simulations into report.html/report.md"),
    "calibrate": ("nitisim.calibrate.cli", "probe this host and write an accelerator YAML that models it"),
    "run": ("nitisim.run_cli", "the main job: train, simulate the shipped accelerators, compare"),
    "sweep": ("nitisim.sweep_cli", "design-space sweep over accelerator parameters"),
    "models": ("nitisim.models_cli", "list the built-in models with their shapes and MAC counts"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nitisim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).main(args) or 0)
    except UserInputError as err:
        print(f"nitisim: error: {terminal_line(str(err))}", file=sys.stderr)
        return 2
    except IntegerOverflowError as err:
        print(f"nitisim: error: integer overflow: {terminal_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nitisim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output left (`nitisim models | head -1`): stop quietly, as cat does, and
        # point stdout at /dev/null so the interpreter's final flush does not fail a second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a writer whose pipe closed


if __name__ == "__main__":
    sys.exit(main())
