"""JSON Schema validation behind one interface, with two interchangeable backends.

`jsonschema` is the reference. `jsonschema-rs` is the fast path for large sections (100,000 users
validate in milliseconds instead of seconds); tests/test_validator_parity.py shows both give the
same verdicts and the same failures on every policy, example and fixture we ship. Failure messages
are written here from the failing keyword, its value and the offending instance, so the evidence
reads the same whichever backend found it.

A policy is a user's file and the data it judges is hostile, so evaluation is bounded:
- Patterns are ECMA-262, as JSON Schema says. jsonschema-rs reads them so; python-jsonschema would
  use Python's `re` (a backtracking engine: "^(a+)+$" on forty a's and a "!" never ends, and `$`
  matches before a final newline). Here it runs them with RE2 (linear time), translated so both
  backends read `\\s`, `.` and `\\uXXXX` alike; a pattern that needs backtracking (backreferences,
  lookaround) or that only one engine understands is refused by `evaluation_problems` (which
  `policies lint` runs) and by `compile_schema`.
- Every `$ref` must resolve inside the schema, and no chain of them may come back to where it
  started without descending into the data (that recursion never ends); a schema that expands
  through its references into more subschemas than any policy needs is refused too.
- What is left (a schema whose work grows steeply with the data) is stopped by a time limit per
  evaluation: the Python backend checks the clock at every keyword it applies and gives up with
  EvaluationTimeout. jsonschema-rs holds the interpreter for the whole call and cannot be stopped
  from Python (a watchdog thread cannot even run meanwhile), so only schemas whose work is bounded
  by the data's size go to it: a recursive schema is evaluated by the Python backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import unquote

import jsonschema
import re2  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError
from referencing.exceptions import Unresolvable

from auditor.jsonutil import JSON, pointer, resolve_pointer

try:  # pragma: no branch - the import succeeds wherever the wheel exists
    import jsonschema_rs

    HAVE_RS = True
except ImportError:  # pragma: no cover - platforms without a jsonschema-rs wheel
    HAVE_RS = False

BACKENDS = ("jsonschema", "jsonschema-rs")

# The most one policy may take on one subject before it is `error` ([policies] timeout_seconds).
# The Python backend takes about 5 s on a section of 100,000 users (jsonschema-rs: 0.3 s): a
# minute leaves room for heavier policies on slow runners and still ends a runaway one.
DEFAULT_TIMEOUT_SECONDS = 60.0
# Subschemas a schema may expand into through its references (each counted every time it is
# reached); the largest bundled policy has 85. Forty levels of anyOf naming the level
# below twice make 2**40.
MAX_SUBSCHEMAS = 20_000


class EvaluationError(Exception):
    """A policy could not be evaluated; the message is the `error` result's reason."""


class EvaluationTimeout(EvaluationError):
    """The evaluation ran past its time limit."""


class PatternError(ValueError):
    """A pattern that cannot run the same way, in linear time, in both backends: says why."""


# --- patterns: ECMA-262 read by RE2 ------------------------------------------------------------

# ECMA-262 white space and line terminators, which `\s` means there (and in jsonschema-rs); RE2's
# own `\s` is ASCII only. Written for the inside of a character class.
_ECMA_SPACE = (
    "\\t\\n\\x0b\\x0c\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}\\x{feff}"
)
# ECMA-262 `.`: anything but a line terminator (RE2's stops only at \n).
_ECMA_DOT = "[^\\n\\r\\x{2028}\\x{2029}]"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_BACKREFERENCE = (
    "backreferences (\\1, \\k<name>, (?P=name)) need a backtracking regex engine, which can take "
    "exponential time on hostile data; patterns run on RE2, in linear time: rewrite it without them"
)
_LOOKAROUND = (
    "lookaround ((?=…), (?!…), (?<=…), (?<!…)) needs a backtracking regex engine, which can take "
    "exponential time on hostile data; patterns run on RE2, in linear time: rewrite it without it"
)


def _escape(pattern: str, at: int, in_class: bool) -> tuple[int, str]:
    """(characters consumed, RE2 text) for the escape starting at `at`."""
    if at + 1 >= len(pattern):
        raise PatternError("it ends with a lone backslash")
    letter = pattern[at + 1]
    if letter in "AzZ":
        origin = {"A": "Perl and Python", "z": "Perl", "Z": "Python-only"}[letter]
        raise PatternError(
            f"\\{letter} is {origin} syntax, not ECMA-262, which JSON Schema patterns are (there "
            f"it means a plain {letter!r}): use {'^' if letter == 'A' else '$'} for the "
            f"{'start' if letter == 'A' else 'end'} of the string"
        )
    if letter in "123456789" or (letter == "k" and pattern.startswith("<", at + 2)):
        raise PatternError(_BACKREFERENCE)
    if letter == "s":
        return 2, _ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]"
    if letter == "S":
        if in_class:
            raise PatternError(
                "\\S inside [...] cannot be read alike by both validators: "
                "list what may appear instead, or use [^\\s...] for what may not"
            )
        return 2, f"[^{_ECMA_SPACE}]"
    if letter == "u":
        digits = pattern[at + 2 : at + 6]
        if len(digits) != 4 or not set(digits) <= _HEX_DIGITS:
            raise PatternError("\\u must be followed by four hex digits (\\u00e9)")
        return 6, f"\\x{{{digits}}}"
    return 2, pattern[at : at + 2]


def _group(pattern: str, at: int) -> None:
    """Refuse the `(?` groups ECMA-262 does not have, or RE2 cannot run."""
    rest = pattern[at + 2 :]
    if rest.startswith(("=", "!", "<=", "<!")):
        raise PatternError(_LOOKAROUND)
    if rest.startswith("P="):
        raise PatternError(_BACKREFERENCE)
    if not rest.startswith((":", "<", "P<")):
        raise PatternError(
            "inline flags such as (?i) and other (?…) groups are not ECMA-262 syntax, and the "
            "two validators read them differently: only (?:…) and (?<name>…) groups are allowed"
        )


def ecma_to_re2(pattern: str) -> str:
    """The RE2 pattern that matches what the ECMA-262 `pattern` matches (as jsonschema-rs reads
    it); PatternError when there is none."""
    out: list[str] = []
    at, in_class = 0, False
    while at < len(pattern):
        char = pattern[at]
        step, text = 1, char
        if char == "\\":
            step, text = _escape(pattern, at, in_class)
        elif in_class:
            in_class = char != "]"
        elif pattern.startswith(("[\\s\\S]", "[\\S\\s]"), at):
            step, text = 6, "(?s:.)"  # JavaScript's idiom for any character at all
        elif char == "[":
            if pattern.startswith(("[]", "[^]"), at):
                raise PatternError(
                    "[] and [^] match nothing and anything in ECMA-262 but start a class with a "
                    "literal ] in RE2: write \\] for a literal ]"
                )
            in_class = True
        elif char == ".":
            text = _ECMA_DOT
        elif char == "(" and pattern.startswith("(?", at):
            _group(pattern, at)
        out.append(text)
        at += step
    return "".join(out)


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason goes in our message, not to stderr
    return options


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 regex for an ECMA-262 pattern; PatternError says why there is none."""
    translated = ecma_to_re2(pattern)
    try:
        return re2.compile(translated, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"RE2 cannot compile it: {reason}") from None


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# --- schema checks: references, recursion, size, patterns --------------------------------------

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
_REFS = ("$ref", "$dynamicRef")

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
        raise ValueError(f"{ref!r} points at {_type_name(node)}, not a schema")
    return tuple(path)


@dataclass
class _Graph:
    """Every schema object a schema applies, by pointer, with the edges between them."""

    nodes: dict[str, JSON]
    # (to, pointer of the keyword that leads there, whether that keyword is a reference)
    in_place: dict[str, list[tuple[str, str, bool]]]
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
        for keyword in _REFS:
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
            problems.append((pointer(where), f"pattern {_j(pattern, 60)} cannot be used: {exc}"))


_Edge = tuple[str, str, bool]  # to, the pointer of the keyword leading there, is it a $ref


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


def evaluation_problems(schema: JSON) -> list[tuple[str, str]]:
    """Everything that would stop either backend evaluating `schema` (already a valid draft
    2020-12 schema): the static checks, then compiling it with jsonschema-rs."""
    problems = analyse(schema).problems
    if problems or not HAVE_RS:
        return problems
    try:
        jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except jsonschema_rs.ValidationError as exc:
        where = pointer(getattr(exc, "instance_path", None) or [])
        message = str(getattr(exc, "message", None) or exc).splitlines()[0]
        problems = [(where, f"jsonschema-rs cannot compile it: {_shorten(message, 200)}")]
    return problems


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the time limit ----------------------------------------------------------------------------

_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "commsaudit_validation_deadline", default=math.inf
)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Evaluations inside end with EvaluationTimeout after `seconds` (an enclosing limit that
    ends sooner still holds)."""
    token = _DEADLINE.set(min(_DEADLINE.get(), time.monotonic() + seconds))
    try:
        yield
    except EvaluationTimeout:
        raise EvaluationTimeout(f"took longer than {seconds:g} s") from None
    finally:
        _DEADLINE.reset(token)


def _clock_checked(keyword: Callable[..., Any]) -> Callable[..., Any]:
    """A keyword that first checks the deadline: every keyword the Python backend applies,
    however the schema nests, passes here."""

    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if time.monotonic() > _DEADLINE.get():
            raise EvaluationTimeout("took too long")
        return keyword(validator, value, instance, schema)

    return checked


# --- the Python backend's keywords that match patterns (and one that was quadratic) ------------


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        key
        for key in instance
        if key not in properties and not any(_search(p, key) for p in patterns)
    ]


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(e) for e in sorted(extras))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(e) for e in sorted(extras, key=str))
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> set[str]:
    """The keys some keyword of `schema` evaluates: python-jsonschema's own walk
    (find_evaluated_property_keys_by_schema), matching patternProperties with RE2."""
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set[str] = set()
    for keyword in _REFS:
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys |= {k for k, v in instance.items() if _valid(validator.descend(v, subschema))}
    for pattern in schema.get("patternProperties", {}):
        keys |= {k for k in instance if _search(pattern, k)}
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    failed = [
        key
        for key in instance
        if key not in evaluated
        and not _valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
    ]
    if failed:
        verb = "was" if len(failed) == 1 else "were"
        if unevaluated is False:
            joined = ", ".join(repr(k) for k in sorted(failed, key=str))
            yield ValidationError(
                f"Unevaluated properties are not allowed ({joined} {verb} unexpected)"
            )
        else:
            joined = ", ".join(repr(k) for k in failed)
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({joined} {verb} unevaluated and invalid)"
            )


def _identity(value: JSON) -> Any:
    """A hashable stand-in equal for values JSON Schema calls equal (1 and 1.0, not 1 and
    true)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("a", tuple(_identity(v) for v in value))
    return ("o", frozenset((k, _identity(v)) for k, v in value.items()))


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """uniqueItems in linear time: python-jsonschema compares objects pair by pair, which a
    tenant's list of 100,000 objects turns into a hang the clock check cannot interrupt."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        identity = _identity(item)
        if identity in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(identity)


def _python_keywords() -> dict[str, Callable[..., Any]]:
    keywords: dict[str, Callable[..., Any]] = dict(jsonschema.Draft202012Validator.VALIDATORS)
    keywords.update(
        pattern=_pattern,
        patternProperties=_pattern_properties,
        additionalProperties=_additional_properties,
        unevaluatedProperties=_unevaluated_properties,
        uniqueItems=_unique_items,
    )
    return {name: _clock_checked(keyword) for name, keyword in keywords.items()}


# Draft 2020-12 with RE2 patterns and the clock check. Formats stay annotations, as in both
# backends. A `$schema` inside would make python-jsonschema switch to its stock class (Python
# `re`, no clock): `analyse` allows it only at the top, and the top one is left out here.
_extend: Any = jsonschema.validators.extend  # untyped in the stubs
PythonValidator: Any = _extend(jsonschema.Draft202012Validator, _python_keywords())


def python_validator(schema: JSON) -> Any:
    """The Python backend's validator for `schema` (also for parameter schemas)."""
    if isinstance(schema, dict) and "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
    return PythonValidator(schema)


# --- failures, as both backends report them ---------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One way the instance breaks the schema."""

    pointer: str
    keyword: str
    schema_path: tuple[str | int, ...]
    value: JSON
    message: str

    def key(self) -> tuple[str, str, str]:
        """What the failure is: where, which rule, what it says. The schema path is left out:
        the two backends spell paths through $ref differently."""
        return (self.pointer, self.keyword, self.message)


class CompiledSchema(Protocol):
    backend: str
    schema: JSON

    def is_valid(self, instance: JSON) -> bool: ...

    def failures(self, instance: JSON) -> list[Failure]: ...


def _j(value: JSON, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _keyword_schema(root: JSON, schema_path: tuple[str | int, ...]) -> tuple[JSON, JSON] | None:
    """(schema object holding the keyword, the keyword's value), following local $refs."""
    node = root
    parent: JSON = root
    for part in schema_path:
        if isinstance(node, dict) and "$ref" in node and part not in node:
            ref = node["$ref"]
            if not (isinstance(ref, str) and ref.startswith("#")):
                return None
            try:
                node = resolve_pointer(root, ref[1:])
            except KeyError:
                return None
        parent = node
        if part == "$ref" and isinstance(node, dict) and isinstance(node.get("$ref"), str):
            try:
                node = resolve_pointer(root, node["$ref"][1:])
            except KeyError:
                return None
            continue
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return parent, node


def describe(keyword: str, value: JSON, instance: JSON, holder: JSON) -> str:
    """Plain words for one failure: what the value is and what was expected."""
    text: str
    if keyword == "const":
        text = f"is {_j(instance)}; expected {_j(value)}"
    elif keyword == "enum":
        text = f"is {_j(instance)}; expected one of {', '.join(_j(v) for v in value)}"
    elif keyword == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        text = f"is {_type_name(instance)} ({_j(instance, 40)}); expected {wanted}"
    elif keyword == "required":
        missing = [k for k in value if isinstance(instance, dict) and k not in instance]
        text = f"lacks required {'properties' if len(missing) > 1 else 'property'} " + ", ".join(
            _j(k) for k in missing
        )
    elif keyword == "minimum":
        text = f"is {_j(instance)}; must be at least {_j(value)}"
    elif keyword == "maximum":
        text = f"is {_j(instance)}; must be at most {_j(value)}"
    elif keyword == "exclusiveMinimum":
        text = f"is {_j(instance)}; must be more than {_j(value)}"
    elif keyword == "exclusiveMaximum":
        text = f"is {_j(instance)}; must be less than {_j(value)}"
    elif keyword in ("minItems", "maxItems"):
        size = len(instance) if isinstance(instance, list) else 0
        bound = "at least" if keyword == "minItems" else "at most"
        text = f"has {size} item(s); must have {bound} {value}"
    elif keyword in ("minLength", "maxLength"):
        bound = "at least" if keyword == "minLength" else "at most"
        text = f"is {_j(instance)}; must be {bound} {value} characters long"
    elif keyword in ("minProperties", "maxProperties"):
        bound = "at least" if keyword == "minProperties" else "at most"
        size = len(instance) if isinstance(instance, dict) else 0
        text = f"has {size} properties; must have {bound} {value}"
    elif keyword == "pattern":
        text = f"is {_j(instance)}; must match the pattern {value}"
    elif keyword in ("contains", "minContains"):
        least = holder.get("minContains", 1) if isinstance(holder, dict) else 1
        text = (
            "has no item that meets the requirement"
            if least == 1
            else f"has fewer than {least} items that meet the requirement"
        )
    elif keyword == "maxContains":
        text = f"has more than {value} items that meet the requirement"
    elif keyword == "not":
        text = f"is {_j(instance, 60)}, which is not allowed here"
    elif keyword == "anyOf":
        text = f"is {_j(instance, 60)}, which matches none of the accepted forms"
    elif keyword == "oneOf":
        text = f"is {_j(instance, 60)}, which does not match exactly one of the accepted forms"
    elif keyword == "unevaluatedProperties":
        text = "has properties that no part of the schema allows"
    elif keyword == "additionalProperties":
        known = set(holder.get("properties", {})) if isinstance(holder, dict) else set()
        extra = sorted(set(instance) - known) if isinstance(instance, dict) else []
        text = "has properties that are not allowed" + (
            ": " + ", ".join(_j(k) for k in extra)
            if extra and not holder.get("patternProperties")
            else ""
        )
    elif keyword == "uniqueItems":
        text = "has duplicate items"
    elif keyword == "multipleOf":
        text = f"is {_j(instance)}; must be a multiple of {_j(value)}"
    elif keyword == "false" or value is False:
        text = f"is {_j(instance, 60)}, which is not allowed here"
    else:
        text = f"is {_j(instance, 60)}; fails {keyword!r}"
    description = holder.get("description") if isinstance(holder, dict) else None
    return f"{text} ({description})" if isinstance(description, str) else text


# Keywords whose failure the backends attribute differently (jsonschema blames `contains` for an
# unmet `minContains`; jsonschema-rs blames `minContains`): one name for both.
_SAME_RULE = {"minContains": "contains"}


def _failure(
    root: JSON,
    path: list[str | int],
    schema_path: tuple[str | int, ...],
    instance: JSON,
    fallback: str,
) -> Failure:
    keyword = str(schema_path[-1]) if schema_path else "false"
    if "propertyNames" in schema_path:
        # The backends disagree on the instance here (the name, or the object holding it).
        return Failure(
            pointer(path),
            "propertyNames",
            schema_path,
            None,
            "has a property name that the schema does not allow",
        )
    found = _keyword_schema(root, schema_path) if schema_path else (root, False)
    if found is None:
        message = fallback
    else:
        holder, value = found
        message = describe(keyword, value, instance, holder)
    return Failure(pointer(path), _SAME_RULE.get(keyword, keyword), schema_path, instance, message)


_RawError = tuple[list[str | int], tuple[str | int, ...], JSON, str]


def _collect(root: JSON, errors: Iterable[_RawError]) -> list[Failure]:
    """Failures from a backend's (instance path, schema path, instance, message) tuples, in
    order, without repeats (a backend may report one missing property per `required` entry)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for path, schema_path, instance, message in errors:
        failure = _failure(root, path, schema_path, instance, message)
        found = [failure]
        if failure.keyword == "contains" and isinstance(instance, list):
            found += _why_no_item_counts(root, path, schema_path, instance)
        for item in found:
            key = item.key()
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


# How many items of a failed `contains` are explained item by item.
_EXPLAINED_ITEMS = 20


def _why_no_item_counts(
    root: JSON, path: list[str | int], schema_path: tuple[str | int, ...], items: list[JSON]
) -> list[Failure]:
    """For "no item meets the requirement", say why each item does not: evidence that points at
    the offending values (a report-only state, an unexpected exclusion) rather than at the list.
    Always worked out with the reference validator, so both backends explain alike."""
    if schema_path and schema_path[-1] == "minContains":  # jsonschema-rs blames the count
        schema_path = (*schema_path[:-1], "contains")
    found = _keyword_schema(root, schema_path)
    if found is None or not isinstance(found[1], dict | bool):
        return []
    requirement = python_validator(root).evolve(schema=found[1])
    explained = []
    for index, item in enumerate(items[:_EXPLAINED_ITEMS]):
        for error in requirement.iter_errors(item):
            inner = _failure(
                root,
                [*path, index, *error.absolute_path],
                (*schema_path, *error.absolute_schema_path),
                error.instance,
                error.message,
            )
            explained.append(replace(inner, message=f"does not count: {inner.message}"))
    return explained


class ReferenceSchema:
    backend = "jsonschema"

    def __init__(self, schema: JSON) -> None:
        self.schema = schema
        # Formats are annotations in draft 2020-12; both backends leave them unchecked.
        self._validator = python_validator(schema)

    def is_valid(self, instance: JSON) -> bool:
        with _evaluation_errors():
            return bool(self._validator.is_valid(instance))

    def failures(self, instance: JSON) -> list[Failure]:
        with _evaluation_errors():
            errors = self._validator.iter_errors(instance)
            return _collect(
                self.schema,
                (
                    (list(e.absolute_path), tuple(e.absolute_schema_path), e.instance, e.message)
                    for e in errors
                ),
            )


@contextlib.contextmanager
def _evaluation_errors() -> Iterator[None]:
    """What stops the Python backend midway, as EvaluationError: nesting deeper than Python's
    stack, or a reference evaluation_problems would have refused (a schema that skipped it)."""
    try:
        yield
    except RecursionError:
        raise EvaluationError("the data or the schema is nested too deeply to evaluate") from None
    except Unresolvable as exc:
        raise EvaluationError(f"a $ref does not resolve: {_shorten(str(exc), 120)}") from None


class RustSchema:
    backend = "jsonschema-rs"

    def __init__(self, schema: JSON) -> None:
        self.schema = schema
        self._validator: Any = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=False, offline=True
        )

    def is_valid(self, instance: JSON) -> bool:
        return bool(self._validator.is_valid(instance))

    def failures(self, instance: JSON) -> list[Failure]:
        errors = self._validator.iter_errors(instance)
        with _evaluation_errors():  # the explanations come from the Python backend
            return _collect(
                self.schema,
                (
                    (list(e.instance_path), tuple(e.schema_path), e.instance, e.message)
                    for e in errors
                ),
            )


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "jsonschema-rs" if HAVE_RS else "jsonschema"
    if name == "jsonschema-rs" and not HAVE_RS:  # pragma: no cover
        raise RuntimeError('jsonschema-rs is not installed; use validator = "jsonschema"')
    return name


def compile_schema(schema: JSON, backend: str = "auto") -> CompiledSchema:
    """`schema` ready to evaluate; EvaluationError when `analyse` refuses it (a policy that
    passed `policies lint` only meets this through a parameter set in the config). A recursive
    schema goes to the Python backend, whatever was asked: only there can a time limit stop it."""
    chosen = resolve_backend(backend)
    shape = analyse(schema)
    if shape.problems:
        raise EvaluationError(
            "its schema cannot be evaluated: "
            + "; ".join(f"{at or '(top)'}: {why}" for at, why in shape.problems[:3])
        )
    if chosen == "jsonschema-rs" and not shape.recursive:
        try:
            return RustSchema(schema)
        except jsonschema_rs.ValidationError as exc:
            message = str(getattr(exc, "message", None) or exc).splitlines()[0]
            raise EvaluationError(
                f"its schema cannot be evaluated: jsonschema-rs cannot compile it: "
                f"{_shorten(message, 200)}"
            ) from None
    return ReferenceSchema(schema)
