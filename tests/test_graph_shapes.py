"""Graph's policy objects checked against the schemas read off msgraph-sdk's typed models
(connectors/m365/shapes.py): a value of another shape than Microsoft publishes makes the
sections read from it `error`; a value newer than the SDK (a string it does not know) and a
member it lacks are not drift."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from connectors.m365 import shapes
from connectors.m365.fetched import read_recorded_tenant
from connectors.m365.normalise import M365Settings, normalise

from helpers import REPO
from m365_verdicts import NOW

CA = shapes.CA_POLICIES
POLICY = {
    "id": "7f0b2c1e-0000-4000-8000-000000000001",
    "displayName": "MFA for everyone",
    "state": "enabled",
    "createdDateTime": "2025-08-01T12:00:00.1234567Z",
    "conditions": {
        "users": {"includeUsers": ["All"], "excludeUsers": []},
        "applications": {"includeApplications": ["All"]},
        "clientAppTypes": ["all"],
        "platforms": None,
    },
    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
}


def _answers() -> list[tuple[str, str, Any]]:
    """(where, path, body) of every checked answer in the repository's recorded tenants,
    published shapes and ScubaGear cases."""
    found = []
    for root in (REPO / "fixtures", REPO / "tests" / "data" / "m365-published"):
        for path in shapes.CHECKED:
            for file in root.rglob(f"{path}.json"):
                found.append((str(file.relative_to(REPO)), path, json.loads(file.read_text())))
    for file in sorted((REPO / "tests" / "data" / "scubagear").glob("*.json")):
        document = json.loads(file.read_text())
        for i, case in enumerate(document["cases"] if isinstance(document, dict) else document):
            for name, body in case.get("files", {}).items():
                if name.removesuffix(".json") in shapes.CHECKED:
                    found.append((f"{file.name}#{i}", name.removesuffix(".json"), body))
    return found


def test_every_recorded_and_published_answer_has_the_shape_the_sdk_models() -> None:
    answers = _answers()
    assert len(answers) >= 100  # recorded tenants, published shapes and ScubaGear's cases
    assert {path for _where, path, _body in answers} == set(shapes.CHECKED)
    drifted = {where: shapes.check(path, body).problem for where, path, body in answers}
    assert {where: p for where, p in drifted.items() if p} == {}


def _ca(policy: dict[str, Any]) -> shapes.ShapeCheck:
    return shapes.check(CA, {"value": [POLICY, policy]})


def _changed(pointer: str, value: Any) -> dict[str, Any]:
    policy = copy.deepcopy(POLICY)
    *parents, last = pointer.strip("/").split("/")
    target = policy
    for part in parents:
        target = target[part]
    target[last] = value
    return policy


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("/state", 5),  # a number where an enumeration's string belongs
        ("/conditions/users/includeUsers", {"all": True}),  # an object where strings belong
        ("/conditions/users/includeUsers", [1]),  # numbers where strings belong
        ("/grantControls", ["block"]),  # a list where an object belongs
        ("/conditions/applications", "All"),  # a string where an object belongs
    ],
)
def test_a_value_of_another_shape_is_named(pointer: str, value: Any) -> None:
    check = _ca(_changed(pointer, value))
    assert check.unreadable and all(p.startswith("/value/1" + pointer) for p in check.unreadable)
    assert check.problem is not None
    assert "microsoft.graph.conditionalAccessPolicy" in check.problem


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("/state", "enabledSometime"),  # an enumeration value newer than the SDK
        ("/conditions/clientAppTypes", ["all", "agentApps"]),
        ("/conditions/someConditionAddedLater", {"includeThings": ["All"]}),  # not modelled
        ("/grantControls/authenticationStrength", {"requirementsSatisfied": "mfa"}),  # flags
    ],
)
def test_newer_values_and_members_the_sdk_lacks_are_not_drift(pointer: str, value: Any) -> None:
    assert _ca(_changed(pointer, value)).problem is None


def test_items_and_answers_that_are_not_objects() -> None:
    assert _ca("not a policy").unreadable == ("/value/1",)  # type: ignore[arg-type]
    assert shapes.check(CA, {"value": {"id": "x"}}).unreadable == ("/value",)
    drift = shapes.check(shapes.AUTHORIZATION_POLICY, {"defaultUserRolePermissions": "all"})
    assert drift.unreadable == ("/defaultUserRolePermissions",)


def test_sections_read_from_a_drifted_answer_are_errors_and_the_others_are_not() -> None:
    _info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / "contoso-health", NOW)
    fetched = dict(fetched)
    answer = fetched[shapes.AUTHORIZATION_POLICY]
    body = copy.deepcopy(answer.data)
    body["allowedToUseSSPR"] = {"enabled": True}  # Boolean in the published schema
    fetched[shapes.AUTHORIZATION_POLICY] = type(answer)(answer.path, 200, body, NOW)
    sections = {s.name: s for s in normalise(fetched, M365Settings())}
    for name in ("m365.entra.authorization_policy", "m365.entra.user_consent"):
        assert sections[name].status == "error"
        assert "/allowedToUseSSPR" in (sections[name].reason or "")
    assert sections["m365.entra.conditional_access"].status == "ok"


def test_the_schemas_are_the_ones_the_installed_sdks_models_give() -> None:
    """graph_shapes.json is generated; when an msgraph-sdk upgrade changes a model, regenerate
    it: python tests/graph_shapes_from_sdk.py > connectors/m365/graph_shapes.json"""
    from graph_shapes_from_sdk import generate

    committed = json.loads((REPO / "connectors" / "m365" / "graph_shapes.json").read_text())
    assert generate() == committed


def test_shape_problems_name_the_members_and_how_many_more() -> None:
    policies = [_changed("/state", 5) for _ in range(7)]
    problem = shapes.check(CA, {"value": policies}).problem or ""
    assert problem.startswith("/value/0/state, /value/1/state")
    assert "and 2 more" in problem
