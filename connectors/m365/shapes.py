"""Graph's small, intricate policy objects checked against Microsoft's published schema: the
Conditional Access policies, the authorisation policy and the authentication methods policy.

The schemas (graph_shapes.json) are read off msgraph-sdk's typed models by
tests/graph_shapes_from_sdk.py: for each member, what the SDK reads it as (a string, a Boolean, a
number, an object of a given type, a collection of either). A run validates against them instead
of importing the models, which costs a second and a half of generated modules on every run and a
millisecond and a half for each policy read (measured: the demo went from 1.7 s to 3.2 s).

A member whose value is of another shape (an object where a list of strings belongs, a number
where a string belongs) is an answer commsaudit was not built for: the sections read from it are
`error`, naming the member, rather than judged on a guess. Members the models lack (Graph returns
some that are only in its beta schema) and enumeration values newer than the SDK are not drift:
the normaliser reads an unknown condition or value as the narrower choice."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema_rs

from auditor.jsonutil import pointer

CA_POLICIES = "graph/v1.0/identity/conditionalAccess/policies"
AUTHORIZATION_POLICY = "graph/v1.0/policies/authorizationPolicy"
AUTHENTICATION_METHODS_POLICY = "graph/v1.0/policies/authenticationMethodsPolicy"
CHECKED = (CA_POLICIES, AUTHORIZATION_POLICY, AUTHENTICATION_METHODS_POLICY)


@dataclass(frozen=True)
class ShapeCheck:
    model: str  # the Graph type, as Microsoft names it
    unreadable: tuple[str, ...] = ()  # JSON pointers whose values the model could not read

    @property
    def problem(self) -> str | None:
        if not self.unreadable:
            return None
        shown = ", ".join(self.unreadable[:5])
        more = f" and {len(self.unreadable) - 5} more" if len(self.unreadable) > 5 else ""
        return (
            f"{shown}{more}: not of the shape Microsoft publishes for {self.model} "
            "(as msgraph-sdk's model of it reads it)"
        )


@functools.cache
def _validators() -> dict[str, tuple[str, Any]]:
    text = resources.files("connectors.m365").joinpath("graph_shapes.json").read_text("utf-8")
    return {
        path: (entry["type"], jsonschema_rs.Draft7Validator(entry["schema"]))
        for path, entry in json.loads(text)["resources"].items()
    }


def check(path: str, data: Any) -> ShapeCheck:
    """How the answer at `path` (one of CHECKED) compares with the published schema."""
    name, validator = _validators()[path]
    if path != CA_POLICIES:
        items: Any = [data]
        prefix = ""
    else:
        items = data.get("value") if isinstance(data, dict) else None
        prefix = "/value"
        if not isinstance(items, list):
            return ShapeCheck(name, ("/value",))
    unreadable: list[str] = []
    for index, item in enumerate(items):
        at = f"{prefix}/{index}" if prefix else ""
        if not isinstance(item, dict):
            unreadable.append(at or "/")
            continue
        unreadable.extend(at + pointer(e.instance_path) for e in validator.iter_errors(item))
    return ShapeCheck(name, tuple(unreadable))
