"""jsonschema-rs gives the same verdicts and the same failures as jsonschema, the reference, on
the whole corpus: every shipped policy's examples, mutations of them, the demo's recorded data,
and schemas exercising the keywords policies use."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from auditor.failures import Failure
from auditor.policy import load_policies
from auditor.resources import demo_dir, policies_dir
from auditor.validation import HAVE_RS, ReferenceSchema, RustSchema

pytestmark = pytest.mark.skipif(not HAVE_RS, reason="jsonschema-rs is not installed")

_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    -1,
    0.5,
    365,
    366,
    1e6,
    "",
    "x",
    "2026-01-01",
    "enforce",
    [],
    [1],
    ["x", "x"],
    {},
    {"a": 1},
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*path, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.extend(_paths(child, (*path, i)))
    return out


def _mutate(value: Any, rng: random.Random) -> Any:
    value = copy.deepcopy(value)
    path = rng.choice(_paths(value))
    if not path:
        return rng.choice(_VALUES)
    parent = value
    for part in path[:-1]:
        parent = parent[part]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25 and isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice(_VALUES)))
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(_VALUES))
    return value


def _keyword_schemas() -> list[tuple[dict[str, Any], list[Any]]]:
    instances: list[Any] = [
        *_VALUES,
        {"a": 1, "b": "x"},
        {"a": "1"},
        [1, 2, 2],
        [{"k": 1}, {"k": 2}],
        {"users": [{"type": "member", "on": True, "mfa": False}]},
    ]
    schemas = [
        {"type": "integer"},
        {"type": ["number", "null"]},
        {"const": 1},
        {"const": {"a": 1}},
        {"enum": [1, "x", None]},
        {"minimum": 1, "exclusiveMaximum": 366},
        {"multipleOf": 0.5},
        {"required": ["a", "b"], "properties": {"a": {"type": "integer"}}},
        {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        {"patternProperties": {"^a": {"type": "string"}}, "additionalProperties": False},
        {"contains": {"const": 2}, "minContains": 2},
        {"uniqueItems": True},
        {"maxItems": 1},
        {"anyOf": [{"type": "string"}, {"minimum": 2}]},
        {"oneOf": [{"type": "number"}, {"const": 1}]},
        {"not": {"type": "object"}},
        {"dependentRequired": {"a": ["b"]}},
        {
            "allOf": [{"$ref": "#/$defs/obj"}],
            "unevaluatedProperties": False,
            "$defs": {"obj": {"type": "object", "properties": {"a": True}}},
        },
        {
            "items": {
                "if": {"properties": {"k": {"const": 1}}},
                "then": {"required": ["z"]},
                "else": {"maxProperties": 0},
            }
        },
        {
            "properties": {
                "users": {
                    "items": {
                        "if": {"properties": {"type": {"const": "member"}, "on": {"const": True}}},
                        "then": {"properties": {"mfa": {"const": True}}},
                    }
                }
            }
        },
        {"minLength": 2, "pattern": "^[0-9]{4}-"},
        {"propertyNames": {"maxLength": 1}},
    ]
    return [(s, instances) for s in schemas]


def _corpus() -> list[tuple[str, Any, list[Any]]]:
    rng = random.Random(20261127)
    corpus: list[tuple[str, Any, list[Any]]] = []
    for policy in load_policies([policies_dir()]):
        for profile in policy.profiles:
            values = policy.resolve_parameters()
            schema = policy.schema_for(profile, values)
            instances = []
            for example in policy.examples:
                instances.append(example.input)
                instances.extend(_mutate(example.input, rng) for _ in range(40))
            corpus.append((f"{policy.id} [{profile}]", schema, instances))
            if policy.applicable_schema is not None:
                corpus.append((f"{policy.id} applicable", policy.applicable_for(values), instances))
    recorded = json.loads((demo_dir() / "contoso-health" / "recorded-sections.json").read_text())
    data = [s["data"] for s in recorded["sections"]]
    for policy in load_policies([policies_dir()]):
        if policy.platform == "m365":
            corpus.append(
                (
                    f"{policy.id} on demo data",
                    policy.schema_for("hipaa", policy.resolve_parameters()),
                    data,
                )
            )
    for i, (schema, instances) in enumerate(_keyword_schemas()):
        corpus.append((f"keyword schema {i}: {json.dumps(schema)[:60]}", schema, instances))
    return corpus


def _keys(failures: list[Failure]) -> list[tuple[str, str, str]]:
    return sorted(f.key() for f in failures)


def test_verdicts_and_failures_agree_on_the_whole_corpus() -> None:
    cases = agreed = 0
    disagreements = []
    for name, schema, instances in _corpus():
        reference, fast = ReferenceSchema(schema), RustSchema(schema)
        for instance in instances:
            cases += 1
            same_verdict = reference.is_valid(instance) == fast.is_valid(instance)
            same_failures = _keys(reference.failures(instance)) == _keys(fast.failures(instance))
            if same_verdict and same_failures:
                agreed += 1
            else:
                disagreements.append((name, json.dumps(instance)[:120], same_verdict))
    print(f"\nvalidator parity: {agreed}/{cases} cases agree (verdicts and failures)")
    assert cases > 1000
    assert not disagreements, disagreements[:5]
