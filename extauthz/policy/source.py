"""Read policy YAML keeping line numbers, so every error can say ``file:line``.

Mappings load as ``LineDict`` (a dict that remembers the line of each key) and sequences
as ``LineList``; both compare and serialise like plain dicts and lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extauthz.errors import PolicyError

# Policies nest a few levels (rules → when → condition → list).  Deeper documents are
# refused before composing: LibYAML's composer recurses in C and overflows the stack (a
# segfault) on ~100k nested brackets, and constructing even ~300 levels hits Python's
# recursion limit.
MAX_POLICY_NESTING = 64
_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class LineDict(dict[str, Any]):
    """A mapping from YAML that knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class LineList(list[Any]):
    """A sequence from YAML that knows its own line and the line of each item."""

    line: int = 0
    item_lines: list[int]


# LibYAML's parser (PyYAML's wheels ship it): composing nodes in pure Python was 80% of a
# 200-rule build, time a reload spent holding the GIL the gRPC workers need.
class _LineLoader(yaml.CSafeLoader):
    """SafeLoader that records lines and rejects duplicate keys (ambiguous policies)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        if not isinstance(node, yaml.MappingNode):  # e.g. a sequence tagged !!set
            raise yaml.constructor.ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


@dataclass(frozen=True)
class PolicySource:
    """One parsed YAML policy file."""

    path: Path
    document: Any

    def line_of(self, location: tuple[str | int, ...]) -> int:
        """Best line for a path into the document (the deepest node that has one)."""
        node: Any = self.document
        line = getattr(node, "line", 1)
        for part in location:
            if isinstance(node, LineDict) and isinstance(part, str) and part in node:
                line = node.key_lines.get(part, line)
                node = node[part]
            elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
                line = node.item_lines[part]
                node = node[part]
            else:
                break
        return line

    def error(self, location: tuple[str | int, ...], message: str) -> PolicyError:
        """A PolicyError naming file, line and key path."""
        where = format_location(location)
        return PolicyError(f"{self.path}:{self.line_of(location)}: {where}: {message}")


def format_location(location: tuple[str | int, ...]) -> str:
    """``("rules", 2, "when")`` → ``rules[2].when``."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def read_policy_file(path: Path) -> PolicySource:
    """Parse one YAML policy file; PolicyError with file and line on malformed YAML."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError(f"{path}:{line}: not UTF-8 (byte {exc.start})") from exc
    try:
        too_deep = _too_deep(text)
        if too_deep is not None:
            raise PolicyError(f"{path}:{too_deep}: not valid YAML: nested deeper than {MAX_POLICY_NESTING} levels")
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a (C)SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise PolicyError(f"{path}:{line}: not valid YAML: {exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: located by offset, not line
        line = text.count("\n", 0, exc.position) + 1
        raise PolicyError(f"{path}:{line}: not valid YAML: {_character(exc.character)} is not allowed") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}:1: not valid YAML: {exc}") from exc
    return PolicySource(path=path, document=document)


def _character(character: object) -> str:
    """A forbidden character as U+XXXX (LibYAML reports a code point, PyYAML a str)."""
    if isinstance(character, str) and len(character) == 1:
        return f"character U+{ord(character):04X}"
    if isinstance(character, int):
        return f"character U+{character:04X}"
    return "a character"


def _too_deep(text: str) -> int | None:
    """The line where the document gets nested deeper than MAX_POLICY_NESTING, if it does
    (one pass over LibYAML's events, which needs no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, _OPENING):
            depth += 1
            if depth > MAX_POLICY_NESTING:
                return event.start_mark.line + 1 if event.start_mark is not None else 1
        elif isinstance(event, _CLOSING):
            depth -= 1
    return None
