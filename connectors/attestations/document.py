"""Read a YAML or JSON document and remember the line of every value, so errors can say
`attestations.yaml:14` instead of only a path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


class DocumentError(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _StringDatesLoader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text: a bad date must become a validation error with its
    line, not a ValueError from deep inside PyYAML."""


_StringDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _build(loader: yaml.SafeLoader, node: Node, ptr: str, lines: dict[str, int]) -> Any:
    lines[ptr] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                raise DocumentError(
                    f"keys must be text, found {key!r}", key_node.start_mark.line + 1
                )
            if key in out:
                raise DocumentError(f"key {key!r} appears twice", key_node.start_mark.line + 1)
            out[key] = _build(loader, value_node, f"{ptr}/{_escape(key)}", lines)
        return out
    if isinstance(node, SequenceNode):
        return [_build(loader, item, f"{ptr}/{i}", lines) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node)


def load_document(path: Path, text: str) -> tuple[Any, dict[str, int]]:
    """The document's data and a map from JSON pointer to 1-based line (empty for JSON)."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as exc:
            raise DocumentError(f"invalid JSON: {exc.msg}", exc.lineno) from exc
    loader = _StringDatesLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DocumentError("the file is empty")
        lines: dict[str, int] = {}
        return _build(loader, node, "", lines), lines
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise DocumentError(f"invalid YAML: {exc.problem}", line) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
