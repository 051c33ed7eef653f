"""JSON Schema validation behind one interface, with two interchangeable backends.

`jsonschema` is the reference. `jsonschema-rs` is the fast path for large sections (100,000 users
validate in milliseconds instead of seconds); tests/test_validator_parity.py shows both give the
same verdicts and the same failures on every policy, example and fixture we ship. Failure messages
are written here from the failing keyword, its value and the offending instance, so the evidence
reads the same whichever backend found it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import jsonschema

from auditor.jsonutil import JSON, pointer, resolve_pointer

try:  # pragma: no branch - the import succeeds wherever the wheel exists
    import jsonschema_rs

    HAVE_RS = True
except ImportError:  # pragma: no cover - platforms without a jsonschema-rs wheel
    HAVE_RS = False

BACKENDS = ("jsonschema", "jsonschema-rs")


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
    requirement = jsonschema.Draft202012Validator(root).evolve(schema=found[1])
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
        self._validator = jsonschema.Draft202012Validator(schema)

    def is_valid(self, instance: JSON) -> bool:
        return bool(self._validator.is_valid(instance))

    def failures(self, instance: JSON) -> list[Failure]:
        errors = self._validator.iter_errors(instance)
        return _collect(
            self.schema,
            (
                (list(e.absolute_path), tuple(e.absolute_schema_path), e.instance, e.message)
                for e in errors
            ),
        )


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
        return _collect(
            self.schema,
            ((list(e.instance_path), tuple(e.schema_path), e.instance, e.message) for e in errors),
        )


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "jsonschema-rs" if HAVE_RS else "jsonschema"
    if name == "jsonschema-rs" and not HAVE_RS:  # pragma: no cover
        raise RuntimeError('jsonschema-rs is not installed; use validator = "jsonschema"')
    return name


def compile_schema(schema: JSON, backend: str = "auto") -> CompiledSchema:
    chosen = resolve_backend(backend)
    if chosen == "jsonschema-rs":
        return RustSchema(schema)
    return ReferenceSchema(schema)
