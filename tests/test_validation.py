"""Failure messages: plain words, the offending value, and why no item of a list counted."""

from __future__ import annotations

import pytest

from auditor.validation import compile_schema


@pytest.mark.parametrize("backend", ["jsonschema", "jsonschema-rs"])
def test_a_failed_contains_says_why_each_item_does_not_count(backend: str) -> None:
    schema = {
        "properties": {
            "policies": {
                "contains": {
                    "required": ["state"],
                    "properties": {
                        "state": {"const": "enabled"},
                        "unexpected_exclusions": {"maxItems": 0},
                    },
                }
            }
        }
    }
    instance = {
        "policies": [
            {"state": "enabledForReportingButNotEnforced", "unexpected_exclusions": []},
            {
                "state": "enabled",
                "unexpected_exclusions": [{"kind": "group", "name": "Contractors"}],
            },
        ]
    }
    failures = compile_schema(schema, backend).failures(instance)
    assert [(f.pointer, f.message) for f in failures] == [
        ("/policies", "has no item that meets the requirement"),
        (
            "/policies/0/state",
            'does not count: is "enabledForReportingButNotEnforced"; expected "enabled"',
        ),
        ("/policies/1/unexpected_exclusions", "does not count: has 1 item(s); must have at most 0"),
    ]


@pytest.mark.parametrize(
    ("schema", "instance", "message"),
    [
        ({"const": True}, False, "is false; expected true"),
        ({"enum": ["Off", "Manual"]}, "On", 'is "On"; expected one of "Off", "Manual"'),
        ({"type": "object"}, None, "is null (null); expected object"),
        ({"required": ["a", "b"]}, {}, 'lacks required properties "a", "b"'),
        ({"maximum": 365}, 400, "is 400; must be at most 365"),
        ({"maxItems": 0}, [1, 2], "has 2 item(s); must have at most 0"),
        ({"const": 1, "description": "the answer"}, 2, "is 2; expected 1 (the answer)"),
    ],
)
def test_messages(schema: dict[str, object], instance: object, message: str) -> None:
    for backend in ("jsonschema", "jsonschema-rs"):
        assert [f.message for f in compile_schema(schema, backend).failures(instance)] == [message]
