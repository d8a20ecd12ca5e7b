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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from exc
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a (C)SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise PolicyError(f"{path}:{line}: not valid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return PolicySource(path=path, document=document)
