"""The section catalogue: every section a connector (or a derivation) emits, with a JSON Schema
of its data. It is the contract between the two sides of the snapshot: the tests validate what
each normaliser emits against it, and `policies lint` rejects a policy that reads a section no
connector emits or a field the section's schema does not declare.

Each connector package declares its own sections in a `sections.json`; connectors/registry.py
lists the files. A name ending in `.*` declares a family (`provider.*`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jsonschema_rs

from auditor.jsonutil import pointer_parts
from auditor.model.snapshot import Snapshot

# A path into a section's data: member names, and "*" for any item of a list.
FieldPath = tuple[str, ...]
_SAME_PLACE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else")
_MESSAGE_CAP = 300  # characters of one schema problem's message


@dataclass(frozen=True)
class SectionSpec:
    name: str
    platforms: tuple[str, ...]
    subjects: tuple[str, ...]
    title: str
    schema: Mapping[str, Any]
    declared_in: str  # the file, for messages

    @functools.cached_property
    def _validator(self) -> Any:
        return jsonschema_rs.Draft202012Validator(dict(self.schema))

    def problems(self, data: Any, limit: int = 5) -> list[str]:
        """Where `data` departs from this section's schema, one line each (the first `limit`)."""
        out = []
        for error in self._validator.iter_errors(data):
            where = "".join(f"/{p}" for p in error.instance_path) or "(the whole section)"
            # The validator quotes the offending value whole: a list of 50,000 mailboxes, or a
            # string the size of the answer, would become the reason in every report.
            message = error.message
            if len(message) > _MESSAGE_CAP:
                message = message[:_MESSAGE_CAP] + "…"
            out.append(f"{where}: {message}")
            if len(out) >= limit:
                break
        return out


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else (str(value),)


class Catalogue:
    def __init__(self, specs: Iterable[SectionSpec]) -> None:
        self._exact: dict[str, SectionSpec] = {}
        self._families: dict[str, SectionSpec] = {}
        for spec in specs:
            table = self._families if spec.name.endswith(".*") else self._exact
            key = spec.name[:-1] if spec.name.endswith(".*") else spec.name
            if key in table:
                raise ValueError(f"{spec.declared_in}: section {spec.name} is declared twice")
            table[key] = spec

    @classmethod
    def from_documents(cls, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> Catalogue:
        """From each `sections.json` (named by where it is, for messages)."""
        return cls(
            SectionSpec(
                name=name,
                platforms=_tuple(entry["platform"]),
                subjects=_tuple(entry["subject"]),
                title=str(entry.get("title", "")),
                schema=entry["schema"],
                declared_in=where,
            )
            for where, document in documents
            for name, entry in document["sections"].items()
        )

    def __iter__(self) -> Iterator[SectionSpec]:
        yield from self._exact.values()
        yield from self._families.values()

    def get(self, name: str) -> SectionSpec | None:
        found = self._exact.get(name)
        if found is not None:
            return found
        return next((s for p, s in self._families.items() if name.startswith(p)), None)

    def problems_of(
        self, policy_file: str, sections: Mapping[str, str], reads: set[FieldPath]
    ) -> list[str]:
        """What a policy reading `sections` (instance key -> section name; "" for a policy of
        one section) at the paths `reads` gets wrong: a section no connector emits, a field
        the section's schema does not declare."""
        problems = []
        for key, name in sections.items():
            spec = self.get(name)
            if spec is None:
                problems.append(
                    f"{policy_file}: source {name!r} is not a section any connector emits "
                    "(the section catalogue: each connector's sections.json)"
                )
                continue
            for path in sorted(reads):
                if key and (not path or path[0] != key):
                    continue
                inner = path[1:] if key else path
                if inner and not declares(spec.schema, inner):
                    shown = "/" + "/".join(inner)
                    problems.append(
                        f"{policy_file}: reads {shown} of {name}, a field its schema in "
                        f"{spec.declared_in} does not declare"
                    )
        return problems

    def refusal(self, name: str, data: Any, what: str) -> str | None:
        """Why recorded data (`what`: "the replayed data", ...) is not to be judged: it is no
        data the section can hold as this version writes it, a field it always writes missing or
        one it never writes. A snapshot from another version, or edited by hand, could
        otherwise pass a control on a condition its data never recorded. None when it fits, or
        when no connector declares the section (a policy cannot read that one)."""
        spec = self.get(name)
        problems = spec.problems(data, limit=3) if spec is not None else []
        if not problems:
            return None
        return (
            f"{what} is not data {name} can hold as this version of commsaudit writes it "
            f"({'; '.join(problems)}): record the section again"
        )

    def held_to(self, snapshot: Snapshot, what: str) -> Snapshot:
        """`snapshot` with each `ok` section whose data this version could not have written
        turned into an `error` saying why (see `refusal`)."""
        sections = []
        for section in snapshot.sections:
            ok = section.status == "ok"
            refused = self.refusal(section.name, section.data, what) if ok else None
            if refused is not None:
                section = replace(section, status="error", data=None, reason=refused)
            sections.append(section)
        snapshot.sections[:] = sections
        return snapshot

    def example_problems(
        self, policy_file: str, sections: Mapping[str, str], examples: Iterable[tuple[str, Any]]
    ) -> list[str]:
        """Each example (name, input) whose input is no data its section can hold: a field the
        connector always writes left out, one it never writes, a value of the wrong kind. An
        example that could never arise proves nothing about the real answers."""
        problems: list[str] = []
        for example, given in examples:
            for key, name in sections.items():
                spec = self.get(name)
                data = given.get(key) if key and isinstance(given, Mapping) else given
                if spec is None or (key and data is None):
                    continue  # an unknown source is problems_of's; an absent section is allowed
                shown = f" ({key})" if key else ""
                problems.extend(
                    f"{policy_file}: example {example!r}{shown} is not data {name} can hold: "
                    f"{problem}"
                    for problem in spec.problems(data, limit=3)
                )
        return problems


def _resolve(root: Mapping[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> list[Any]:
    """`node` and every schema that applies at the same place (through $ref and the
    combinators), within `root`."""
    if not isinstance(node, Mapping):
        return []
    out = [node]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
        target: Any = root
        for part in pointer_parts(ref[1:]):
            target = target.get(part) if isinstance(target, Mapping) else None
        out.extend(_resolve(root, target, seen | {ref}))
    for key in _SAME_PLACE:
        value = node.get(key)
        for child in value if isinstance(value, list) else [value]:
            out.extend(_resolve(root, child, seen))
    return out


def declares(schema: Mapping[str, Any], path: FieldPath) -> bool:
    """Whether `schema` declares the member at `path` (a name in `properties`, or a member of a
    map whose values `additionalProperties` describes; "*" an item of a list)."""
    nodes = _resolve(schema, schema)
    for part in path:
        reached: list[Any] = []
        for node in nodes:
            if part == "*":
                for key in ("items", "contains"):
                    reached.extend(_resolve(schema, node.get(key)))
                prefix = node.get("prefixItems")
                for child in prefix if isinstance(prefix, list) else []:
                    reached.extend(_resolve(schema, child))
            else:
                properties = node.get("properties")
                if isinstance(properties, Mapping) and part in properties:
                    reached.extend(_resolve(schema, properties[part]))
                extra = node.get("additionalProperties")
                if isinstance(extra, Mapping):
                    reached.extend(_resolve(schema, extra))
        if not reached:
            return False
        nodes = reached
    return True


def paths_read(schema: Any) -> set[FieldPath]:
    """Every member a policy's schema constrains, as a path into the instance."""
    found: set[FieldPath] = set()
    root = schema if isinstance(schema, Mapping) else {}

    def walk(node: Any, at: FieldPath, seen: frozenset[str]) -> None:
        if not isinstance(node, Mapping):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
            target: Any = root
            for part in pointer_parts(ref[1:]):
                target = target.get(part) if isinstance(target, Mapping) else None
            walk(target, at, seen | {ref})
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            for name, child in properties.items():
                found.add((*at, name))
                walk(child, (*at, name), seen)
        required = node.get("required")
        for name in required if isinstance(required, list) else []:
            found.add((*at, str(name)))
        for key in ("items", "contains"):
            walk(node.get(key), (*at, "*"), seen)
        prefix = node.get("prefixItems")
        for child in prefix if isinstance(prefix, list) else []:
            walk(child, (*at, "*"), seen)
        for key in _SAME_PLACE:
            value = node.get(key)
            for child in value if isinstance(value, list) else [value]:
                walk(child, at, seen)

    walk(schema, (), frozenset())
    return found


def path_of_pointer(ptr: str) -> FieldPath:
    """A JSON pointer into an instance as a catalogue path: list indexes become "*"."""
    return tuple("*" if part.isdigit() else part for part in pointer_parts(ptr))
