"""The static checks a schema passes before anything is evaluated against it.

A policy is a user's file, so its schema is read as hostile: every pattern must compile on RE2,
every `$ref` must resolve inside the schema, no chain of them may come back to where it started
without descending into the data (that recursion never ends), and a schema that expands through
its references into more subschemas than any policy needs is refused. `analyse` also says whether
the schema is recursive through the data (then only a time limit bounds its work).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from auditor.jsonutil import JSON, json_excerpt, pointer, resolve_pointer, type_name
from auditor.patterns import PatternError, compile_pattern

# Subschemas a schema may expand into through its references (each counted every time it is
# reached); the largest bundled policy has 85. Forty levels of anyOf naming the level
# below twice make 2**40.
MAX_SUBSCHEMAS = 20_000

_ONE, _MANY, _MAP = "one", "many", "map"
# Keywords whose subschemas apply to the same instance, and those that descend into its parts.
_IN_PLACE = {
    "allOf": _MANY,
    "anyOf": _MANY,
    "oneOf": _MANY,
    "not": _ONE,
    "if": _ONE,
    "then": _ONE,
    "else": _ONE,
    "dependentSchemas": _MAP,
}
_DESCENDING = {
    "properties": _MAP,
    "patternProperties": _MAP,
    "additionalProperties": _ONE,
    "items": _ONE,
    "prefixItems": _MANY,
    "contains": _ONE,
    "propertyNames": _ONE,
    "unevaluatedItems": _ONE,
    "unevaluatedProperties": _ONE,
}
_DEFINITIONS = {"$defs": _MAP, "definitions": _MAP}
REF_KEYWORDS = ("$ref", "$dynamicRef")

_Path = tuple[str | int, ...]


def _subschemas(node: dict[str, Any], keywords: dict[str, str]) -> Iterator[tuple[_Path, JSON]]:
    for keyword, shape in keywords.items():
        value = node.get(keyword)
        if shape == _ONE and isinstance(value, dict | bool):
            yield (keyword,), value
        elif shape == _MANY and isinstance(value, list):
            yield from (
                ((keyword, i), v) for i, v in enumerate(value) if isinstance(v, dict | bool)
            )
        elif shape == _MAP and isinstance(value, dict):
            yield from (((keyword, k), v) for k, v in value.items() if isinstance(v, dict | bool))


def _ref_target(root: JSON, ref: str) -> _Path:
    """Where a local `$ref` points, read as both backends read it (percent-decoded, then RFC
    6901); ValueError saying why when it points nowhere, or at something that is not a schema."""
    if ref != "#" and not ref.startswith("#/"):
        raise ValueError(
            f"{ref!r} is not a JSON pointer reference: write #/$defs/NAME (anchors are not "
            "supported)"
        )
    node: JSON = root
    path: list[str | int] = []
    for part in unquote(ref[1:]).split("/")[1:] if ref != "#" else []:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node, path = node[key], [*path, key]
        elif isinstance(node, list) and part.isdigit() and str(int(part)) == part:
            if int(part) >= len(node):
                raise ValueError(f"{ref!r} does not resolve: there is nothing at {ref[1:]}")
            node, path = node[int(part)], [*path, int(part)]
        else:
            raise ValueError(
                f"{ref!r} does not resolve: there is nothing at {ref[1:]} in this schema "
                "(references are JSON pointers from the schema's top, e.g. #/$defs/NAME)"
            )
    if not isinstance(node, dict | bool):
        raise ValueError(f"{ref!r} points at {type_name(node)}, not a schema")
    return tuple(path)


_Edge = tuple[str, str, bool]  # to, the pointer of the keyword leading there, is it a $ref


@dataclass
class _Graph:
    """Every schema object a schema applies, by pointer, with the edges between them."""

    nodes: dict[str, JSON]
    in_place: dict[str, list[_Edge]]
    descending: dict[str, list[str]]
    problems: list[tuple[str, str]]


def _graph(schema: JSON) -> _Graph:
    graph = _Graph({}, {}, {}, [])
    todo: list[_Path] = [()]
    while todo:
        path = todo.pop()
        at = pointer(path)
        if at in graph.nodes:
            continue
        node = resolve_pointer(schema, at)
        graph.nodes[at] = node
        graph.in_place[at], graph.descending[at] = [], []
        if not isinstance(node, dict):
            continue
        if path and "$schema" in node:
            graph.problems.append(
                (pointer([*path, "$schema"]), "$schema belongs only at the top of the schema")
            )
        _check_patterns(node, path, graph.problems)
        for rel, _child in _subschemas(node, _IN_PLACE):
            graph.in_place[at].append((pointer(path + rel), pointer(path + rel), False))
            todo.append(path + rel)
        for rel, _child in _subschemas(node, _DESCENDING):
            graph.descending[at].append(pointer(path + rel))
            todo.append(path + rel)
        todo.extend(path + rel for rel, _child in _subschemas(node, _DEFINITIONS))
        for keyword in REF_KEYWORDS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                target = _ref_target(schema, ref)
            except ValueError as exc:
                graph.problems.append((pointer([*path, keyword]), f"{keyword} {exc}"))
                continue
            graph.in_place[at].append((pointer(target), pointer([*path, keyword]), True))
            todo.append(target)
    return graph


def _check_patterns(node: dict[str, Any], path: _Path, problems: list[tuple[str, str]]) -> None:
    found: list[tuple[_Path, str]] = []
    if isinstance(node.get("pattern"), str):
        found.append(((*path, "pattern"), node["pattern"]))
    if isinstance(node.get("patternProperties"), dict):
        found.extend(((*path, "patternProperties", p), p) for p in node["patternProperties"])
    for where, pattern in found:
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            problems.append(
                (pointer(where), f"pattern {json_excerpt(pattern, 60)} cannot be used: {exc}")
            )


def _cycles(edges: dict[str, list[_Edge]]) -> Iterator[list[_Edge]]:
    """Each cycle a depth-first walk meets, as the edges that make it."""
    state: dict[str, int] = {}  # 1 while on the walk's path, 2 when done
    for start in edges:
        if start in state:
            continue
        state[start] = 1
        stack: list[tuple[str, Iterator[_Edge]]] = [(start, iter(edges[start]))]
        trail: list[_Edge] = []  # trail[i] led from stack[i] to stack[i + 1]
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node] = 2
                stack.pop()
                if trail:
                    trail.pop()
                continue
            target = step[0]
            if state.get(target) == 1:
                first = next(i for i, (n, _p) in enumerate(stack) if n == target)
                yield [*trail[first:], step]
            elif target not in state:
                state[target] = 1
                stack.append((target, iter(edges.get(target, []))))
                trail.append(step)


def _expanded_size(graph: _Graph) -> int:
    """How many subschemas the schema applies when every reference is expanded where it stands
    (a recursion counted once), up to MAX_SUBSCHEMAS + 1."""
    sizes: dict[str, int] = {}
    on_path: set[str] = set()
    edges = {
        at: [target for target, _via, _ref in graph.in_place[at]] + graph.descending[at]
        for at in graph.nodes
    }
    stack: list[tuple[str, Iterator[str]]] = [("", iter(edges[""]))]
    on_path.add("")
    total: dict[str, int] = {"": 1}
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            on_path.discard(node)
            sizes[node] = min(total.pop(node), MAX_SUBSCHEMAS + 1)
            if stack:
                parent = stack[-1][0]
                total[parent] = min(total[parent] + sizes[node], MAX_SUBSCHEMAS + 1)
            continue
        if child in on_path:
            continue  # recursion: bounded by the data's depth, not by the schema
        if child in sizes:
            total[node] = min(total[node] + sizes[child], MAX_SUBSCHEMAS + 1)
            continue
        on_path.add(child)
        total[child] = 1
        stack.append((child, iter(edges[child])))
    return sizes[""]


@dataclass(frozen=True)
class SchemaShape:
    """What `analyse` found: problems as (pointer in the schema, why), and whether the
    schema is recursive (some `$ref` leads back into itself through the data)."""

    problems: list[tuple[str, str]]
    recursive: bool


def analyse(schema: JSON) -> SchemaShape:
    """The static checks: every pattern compiles on RE2, every `$ref` resolves, no reference
    chain loops without descending into the data, and the expanded schema has a sane size."""
    graph = _graph(schema)
    problems = list(graph.problems)
    for cycle in _cycles(graph.in_place):
        # A loop always passes through a reference: name the first, where it stands.
        _to, via, _ref = next((edge for edge in cycle if edge[2]), cycle[-1])
        loop = [cycle[-1][0]] + [to for to, _via, is_ref in cycle if is_ref]
        problems.append(
            (
                via,
                f"this reference loops: {' → '.join('#' + at for at in loop)} never descends "
                "into the data, so evaluation would never end",
            )
        )
    full = {
        at: graph.in_place[at] + [(to, to, False) for to in graph.descending[at]]
        for at in graph.nodes
    }
    recursive = next(_cycles(full), None) is not None
    if not problems and _expanded_size(graph) > MAX_SUBSCHEMAS:
        problems.append(
            (
                "",
                f"expands through its references into more than {MAX_SUBSCHEMAS:,} subschemas "
                "(a subschema named twice at each of many levels doubles the work each level): "
                "name each definition once, or flatten it",
            )
        )
    return SchemaShape(problems, recursive)
