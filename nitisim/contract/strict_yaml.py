"""The strict YAML loader every config file goes through (models, training, accelerators, sweeps).

`load_yaml_file(path)` reads a file with a `yaml.SafeLoader` subclass that refuses, as one
`UserInputError` line naming the file (and the line where it can), what plain `yaml.safe_load`
lets through or crashes on:

- bytes that are not UTF-8 (named by byte offset);
- nesting deeper than MAX_DEPTH (the composer recurses once per level, so thousands of levels
  end in RecursionError);
- aliases that expand past MAX_ALIAS_NODES nodes (a "billion laughs" file of a few hundred bytes
  describes gigabytes once anything walks or prints it), and an alias to the node that encloses
  it (a cyclic document no config can mean);
- the same key twice in one mapping (plain YAML keeps the last one silently);
- a scalar Python cannot build (`2026-13-40` read as a date, an int of more than 4300 digits,
  an empty `!!float`).

Valid documents load exactly as `yaml.safe_load` loads them: the same tags, the same values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, SequenceNode

from .errors import UserInputError
from .values import one_line, quote, shorten

MAX_DEPTH = 64  # shipped configs nest 4 deep; the composer uses 2 stack frames per level, Python allows 1000
MAX_ALIAS_NODES = 10_000  # nodes that alias uses may add in all; shipped configs add none
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with a depth limit, an alias expansion budget, and no duplicate keys."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0  # nodes added by alias uses so far
        self._expanded: dict[int, int] = {}  # id(node) -> nodes in its full expansion
        self._open_anchors: set[str] = set()  # anchors of collections still being composed

    # -- composing: depth, alias budget, cycles ---------------------------------------------
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise ComposerError(None, None, f"alias *{event.anchor} refers to a node that contains it",
                                    event.start_mark)
            node = super().compose_node(parent, index)  # the anchored node itself, shared
            self._alias_nodes += self._expanded.get(id(node), 1)
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise ComposerError(None, None, f"aliases expand past {MAX_ALIAS_NODES} nodes",
                                    event.start_mark)
            return node
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        opens = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        if opens:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
            if anchor is not None:
                self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if opens:
                self._depth -= 1
                self._open_anchors.discard(anchor)
        self._expanded[id(node)] = 1 + self._children_size(node)
        return node

    def _children_size(self, node: Any) -> int:
        if isinstance(node, SequenceNode):
            return sum(self._expanded.get(id(child), 1) for child in node.value)
        if isinstance(node, MappingNode):
            return sum(self._expanded.get(id(k), 1) + self._expanded.get(id(v), 1) for k, v in node.value)
        return 0

    # -- constructing: duplicate keys, scalars Python refuses ---------------------------------
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue  # `<<: *base` then overriding keys is how YAML merges, not a duplicate
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeConstructor reports an unhashable key itself
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {quote(key)} (first on line {seen[key]})",
                                           key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as err:  # noqa: BLE001 - datetime(2026, 13, 40), int('1' * 5000), `!!float ''`
            # PyYAML's scalar constructors run Python conversions on the text and let their
            # exceptions escape; whatever they raise, the scalar is what is wrong
            raise ConstructorError(None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]} "
                                   f"({type(err).__name__}: {shorten(str(err))})", node.start_mark) from None


def _one_line(err: yaml.YAMLError, text: str) -> tuple[str | None, str]:
    """(where, problem) of a YAML error: 'line N' and the problem, without PyYAML's multi-line
    excerpt of the file."""
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML forbids, e.g. a NUL byte
        code = err.character if isinstance(err.character, int) else ord(err.character)
        return f"line {text.count(chr(10), 0, err.position) + 1}", f"character #x{code:04x} is not allowed in YAML"
    mark = getattr(err, "problem_mark", None)
    problem, context = getattr(err, "problem", None), getattr(err, "context", None)
    message = f"{context}: {problem}" if problem and context else (problem or context or str(err))
    return (f"line {mark.line + 1}" if mark is not None else None), one_line(str(message))


def load_yaml_file(path: str | Path) -> Any:
    """The document in the YAML file `path`; every problem becomes one UserInputError naming it."""
    path = Path(path)
    src = str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserInputError(src, None, f"cannot read: {err.strerror or err}") from None
    except ValueError as err:  # a path with a NUL byte in it
        raise UserInputError(src, None, f"cannot read: {err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserInputError(src, f"line {line}",
                             f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start}") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as err:
        where, problem = _one_line(err, text)
        raise UserInputError(src, where, f"malformed YAML: {problem}") from None
