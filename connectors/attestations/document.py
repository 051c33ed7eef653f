"""Read a YAML or JSON document and remember the line of every value, so errors can say
`attestations.yaml:14` instead of only a path.

The file is input a person wrote, or a file the config points at by mistake: whatever it holds
ends in data or in one DocumentError with its line, never in a parser's own exception. What
JSON cannot hold is refused, so the YAML and JSON forms mean the same and the evidence can
keep what the policies judged: NaN and infinities, binary and timestamp tags. So are YAML
anchors and aliases (see `_Loader`), nesting deeper than MAX_DEPTH, and numbers too long to be
a count or an amount.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from auditor.jsonutil import loads_strict
from auditor.model.errors import quote

# An attestations file is records of a few fields each, about five levels deep.
MAX_DEPTH = 32
# Longest number text: workforce sizes, hours and counts fit in far fewer; a 5,000-digit
# integer would otherwise stop the YAML reader with Python's own limit on integer text.
MAX_NUMBER_CHARACTERS = 40

_YAML_TAG = "tag:yaml.org,2002:"
_NUMBER_TAGS = {_YAML_TAG + "int", _YAML_TAG + "float"}


class DocumentError(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Document:
    """The data, the 1-based line of each value by JSON pointer (empty for JSON), and, for a
    text value spread over several lines, the part on its first line (for quoting it)."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    first_lines: dict[str, str] = field(default_factory=dict)


class _StringDatesLoader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text: a bad date must become a validation error with its
    line, not a ValueError from deep inside PyYAML."""


_StringDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Loader(_StringDatesLoader):
    """Refuses anchors and aliases as the composer meets them, before anything is expanded.

    Anchors rather than a cap on aliases: nine lines of nine aliases each make a billion
    values ("billion laughs"), so a cap small enough to be safe is close to none, and
    attestations do not need them: each record is short and should read on its own, as the
    assessor reads the file kept in the evidence. The JSON form has nothing like them either.
    Nesting is bounded here too: the composer recurses once per level."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise DocumentError(
                f"alias *{event.anchor} refers to an anchor: anchors and aliases (&name, *name) "
                "are not allowed in an attestations file; write each record out in full",
                line,
            )
        if isinstance(event, ScalarEvent | CollectionStartEvent) and event.anchor is not None:
            raise DocumentError(
                f"anchor &{event.anchor}: anchors and aliases (&name, *name) are not allowed in "
                "an attestations file; write each record out in full",
                line,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DocumentError(
                    f"nested more than {MAX_DEPTH} levels deep; an attestations file is a few "
                    "lists of records",
                    line,
                )
            node: Node | None = super().compose_node(parent, index)
            assert node is not None  # the composer returns None only at the document's end
            return node
        finally:
            self._depth -= 1


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def dotted(ptr: str) -> str:
    """`trainings[0].date` for the pointer `/trainings/0/date`."""
    out = ""
    for raw in ptr.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


class _Builder:
    """Plain data from the composed nodes, with the line of each value."""

    def __init__(self, loader: _Loader, text: str) -> None:
        self.loader = loader
        self.source = text.splitlines()
        self.document = Document(None)

    def build(self, node: Node, ptr: str) -> Any:
        self.document.lines[ptr] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node, ptr) if isinstance(key_node, ScalarNode) else None
                if not isinstance(key, str):
                    raise DocumentError(
                        f"{dotted(ptr)}: keys must be text, found {_kind(key_node, key)}",
                        key_node.start_mark.line + 1,
                    )
                if key in out:
                    raise DocumentError(
                        f"key {quote(key)} appears twice", key_node.start_mark.line + 1
                    )
                out[key] = self.build(value_node, f"{ptr}/{_escape(key)}")
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, f"{ptr}/{i}") for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        value = self.scalar(node, ptr)
        if isinstance(value, str) and node.end_mark.line > node.start_mark.line:
            start = node.start_mark
            self.document.first_lines[ptr] = self.source[start.line][start.column :].strip()
        return value

    def scalar(self, node: ScalarNode, ptr: str) -> Any:
        line = node.start_mark.line + 1
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARACTERS:
            raise DocumentError(
                f"{dotted(ptr)}: a number of {len(node.value)} digits; numbers here are counts, "
                f"hours and sizes of at most {MAX_NUMBER_CHARACTERS} digits",
                line,
            )
        try:
            value = self.loader.construct_object(node)
        except ValueError as exc:
            raise DocumentError(f"{dotted(ptr)}: {exc}", line) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise DocumentError(
                f"{dotted(ptr)}: {node.value} is not a finite number (NaN and infinity are "
                "not allowed); write the value that was measured",
                line,
            )
        if value is not None and not isinstance(value, str | int | float | bool):
            tag = node.tag.removeprefix(_YAML_TAG)
            raise DocumentError(
                f"{dotted(ptr)}: !!{tag} values are not allowed; write text, a number, "
                "true/false or null",
                line,
            )
        return value


def _kind(node: Node, value: Any) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return quote(value)


def _load_json(text: str) -> Document:
    try:
        return Document(loads_strict(text, max_depth=MAX_DEPTH))
    except json.JSONDecodeError as exc:
        raise DocumentError(f"invalid JSON: {exc.msg}", exc.lineno) from exc


def load_document(path: Path, text: str) -> Document:
    """The document's data, with the lines of its values (for YAML)."""
    if path.suffix.lower() == ".json":
        return _load_json(text)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        # The reader checks every character before anything is parsed.
        at = text.count("\n", 0, exc.position or 0) + 1
        what = "a NUL byte" if exc.character == 0 else f"the character #x{exc.character:04x}"
        raise DocumentError(
            f"{what} is not allowed in a YAML file (is this a text file?)", at
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise DocumentError("the file is empty")
        builder = _Builder(loader, text)
        builder.document.data = builder.build(node, "")
        return builder.document
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise DocumentError(f"invalid YAML: {exc.problem}", line) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
