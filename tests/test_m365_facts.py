"""The fact-finding rules of the Microsoft 365 normaliser, one at a time, on the value shapes
Microsoft publishes: what limits a Conditional Access policy, when a grant is MFA, what limits a
compliance policy's location, and what a DLP rule detects. Whole answers are in
test_m365_published.py; these pin the rules' edges."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.m365.conditional_access import (
    combination_is_multifactor,
    grant_facts,
    limiting_conditions,
)
from connectors.m365.normalise import DLP_POLICY_WIDE, DLP_WORKLOADS
from connectors.m365.purview import (
    UnreadableShape,
    location_facts,
    sensitive_types,
    unwrap_pairs,
)

# The condition set of the published v1.0 list example (conditionalaccessroot-list-policies.md):
# every key present, the unset ones null or [].
UNSET: dict[str, Any] = {
    "userRiskLevels": [],
    "signInRiskLevels": [],
    "clientAppTypes": ["all"],
    "servicePrincipalRiskLevels": [],
    "insiderRiskLevels": None,
    "platforms": None,
    "locations": None,
    "devices": None,
    "clientApplications": None,
    "authenticationFlows": None,
    "applications": {
        "includeApplications": ["All"],
        "excludeApplications": [],
        "includeUserActions": [],
        "includeAuthenticationContextClassReferences": [],
        "applicationFilter": None,
    },
    "users": {
        "includeUsers": ["All"],
        "excludeUsers": [],
        "includeGroups": [],
        "excludeGroups": [],
        "includeRoles": [],
        "excludeRoles": [],
        "includeGuestsOrExternalUsers": None,
        "excludeGuestsOrExternalUsers": None,
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    conditions = json.loads(json.dumps(UNSET))
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            conditions[outer][inner] = value
        else:
            conditions[key] = value
    return conditions


def test_the_published_unset_conditions_limit_nothing() -> None:
    assert limiting_conditions(UNSET) == []
    assert limiting_conditions({"applications": {}, "users": {}}) == []  # absent == null


@pytest.mark.parametrize(
    ("changes", "limit"),
    [
        ({"insiderRiskLevels": "elevated"}, "insiderRiskLevels"),
        ({"authenticationFlows": {"transferMethods": "deviceCodeFlow"}}, "authenticationFlows"),
        ({"userRiskLevels": ["high"]}, "userRiskLevels"),
        (
            {
                "devices": {
                    "deviceFilter": {"mode": "exclude", "rule": "device.isCompliant -eq True"}
                }
            },
            "devices",
        ),
        (
            {"clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"]}},
            "clientApplications",
        ),
        ({"platforms": {"includePlatforms": ["all"], "excludePlatforms": ["iOS"]}}, "platforms"),
        ({"locations": {"includeLocations": ["AllTrusted"]}}, "locations"),
        (
            {"applications.applicationFilter": {"mode": "include", "rule": "x"}},
            "applications.applicationFilter",
        ),
        (
            {"applications.includeUserActions": ["urn:user:registerdevice"]},
            "applications.includeUserActions",
        ),
        (
            {"applications.includeAuthenticationContextClassReferences": ["c1"]},
            "applications.includeAuthenticationContextClassReferences",
        ),
        ({"somethingGraphAddsLater": {"include": ["x"]}}, "somethingGraphAddsLater"),
        ({"users.includeAgents": ["All"]}, "users.includeAgents"),
    ],
)
def test_a_condition_with_a_value_limits_the_policy(changes: dict[str, Any], limit: str) -> None:
    assert limiting_conditions(_with(**changes)) == [limit]


def test_platforms_and_locations_that_cover_everything_are_no_limit() -> None:
    everything = _with(
        platforms={"includePlatforms": ["all"], "excludePlatforms": []},
        locations={"includeLocations": ["All"], "excludeLocations": []},
    )
    assert limiting_conditions(everything) == []


@pytest.mark.parametrize(
    ("combination", "multifactor"),
    [
        ("fido2", True),
        ("password,sms", True),
        ("password,x509CertificateSingleFactor", True),
        ("sms,federatedSingleFactor", True),
        ("password", False),
        ("sms", False),
        ("email", False),
        ("federatedSingleFactor", False),
        ("x509CertificateSingleFactor", False),
        ("qrCodePin", False),
        ("password,superStrength", False),  # a mode nobody documents vouches for nothing
        ("", False),
    ],
)
def test_combinations(combination: str, multifactor: bool) -> None:
    assert combination_is_multifactor(combination) is multifactor


def _strength(*combinations: str) -> dict[str, Any]:
    return {"id": "s", "displayName": "s", "allowedCombinations": list(combinations)}


@pytest.mark.parametrize(
    ("grant", "mfa"),
    [
        ({"operator": "OR", "builtInControls": ["mfa"]}, True),
        ({"operator": "OR", "builtInControls": ["mfa", "compliantDevice"]}, False),
        ({"operator": "AND", "builtInControls": ["mfa", "compliantDevice"]}, True),
        (
            {
                "operator": "OR",
                "builtInControls": ["mfa"],
                "authenticationStrength": _strength("fido2"),
            },
            True,
        ),
        (
            {
                "operator": "OR",
                "builtInControls": ["mfa"],
                "authenticationStrength": _strength("password"),
            },
            False,
        ),
        (
            {
                "operator": "AND",
                "builtInControls": ["mfa"],
                "authenticationStrength": _strength("password"),
            },
            True,
        ),
        ({"operator": "OR", "builtInControls": [], "authenticationStrength": _strength()}, False),
        ({"operator": "OR", "builtInControls": ["mfa"], "termsOfUse": ["t1"]}, False),
        ({"operator": "XOR", "builtInControls": ["mfa"]}, False),
        ({"operator": "OR", "builtInControls": ["block"]}, False),
        ({}, False),
    ],
)
def test_a_grant_is_mfa_only_when_every_way_through_is(grant: dict[str, Any], mfa: bool) -> None:
    assert grant_facts(grant, {})["requires_mfa"] is mfa


@pytest.mark.parametrize(
    ("grant", "managed"),
    [
        ({"operator": "OR", "builtInControls": ["compliantDevice", "domainJoinedDevice"]}, True),
        ({"operator": "OR", "builtInControls": ["compliantDevice"]}, True),
        ({"operator": "OR", "builtInControls": ["compliantDevice", "mfa"]}, False),
        ({"operator": "AND", "builtInControls": ["compliantDevice", "mfa"]}, True),
        ({"operator": "OR", "builtInControls": ["approvedApplication"]}, False),
        (
            {
                "operator": "OR",
                "builtInControls": ["domainJoinedDevice"],
                "authenticationStrength": _strength("fido2"),
            },
            False,
        ),
        ({"operator": "OR", "builtInControls": ["compliantDevice"], "termsOfUse": ["t"]}, False),
        ({"operator": "NAND", "builtInControls": ["compliantDevice"]}, False),
        ({}, False),
    ],
)
def test_a_grant_needs_a_managed_device_only_when_every_way_through_does(
    grant: dict[str, Any], managed: bool
) -> None:
    assert grant_facts(grant, {})["requires_managed_device"] is managed


def test_location_limits_name_the_parameter_and_leave_neutral_ones_alone() -> None:
    policy = {
        "ExchangeLocation": [{"Name": "All", "DisplayName": "All"}],
        "ExchangeObjectId": "46f77b71-78a1-428f-a433-a7c8cca1c6e7",
        "ExchangeVersion": "0.20 (15.0.0.0)",
        "ExchangeOnPremisesLocation": [],
        "ExchangeSenderException": [],
        "SharePointLocation": ["All"],
        "SharePointLocationException": ["https://contoso.sharepoint.com/sites/hr"],
        "OneDriveLocation": ["All"],
        "ExceptIfOneDriveSharedByMemberOf": [],
        "TeamsLocation": [{"Name": "All"}],
        "TeamsSomethingNew": ["x"],
    }
    covered, limits = location_facts(policy, DLP_WORKLOADS, DLP_POLICY_WIDE)
    assert covered == {
        "exchange_all": True,
        "sharepoint_all": False,
        "onedrive_all": True,
        "teams_all": False,
    }
    assert limits["sharepoint"] == ["SharePointLocationException"]
    assert limits["teams"] == ["TeamsSomethingNew"]  # unknown and named for the workload
    covered, limits = location_facts(
        {**policy, "PolicyRBACScopes": ["au-1"]}, DLP_WORKLOADS, DLP_POLICY_WIDE
    )
    assert not any(covered.values()) and limits["exchange"] == ["PolicyRBACScopes"]


def test_rest_key_value_pairs_become_objects_however_deep() -> None:
    pairs = [
        [
            {
                "_key": "groups",
                "_value": [
                    [
                        {"_key": "name", "_value": "g"},
                        {"_key": "sensitivetypes", "_value": [[{"_key": "name", "_value": "SSN"}]]},
                    ]
                ],
            },
            {"_key": "operator", "_value": "And"},
        ]
    ]
    assert unwrap_pairs(pairs) == [
        {"groups": [{"name": "g", "sensitivetypes": [{"name": "SSN"}]}], "operator": "And"}
    ]
    assert sensitive_types({"Name": "r", "ContentContainsSensitiveInformation": pairs}) == ["SSN"]


def test_a_type_under_an_odd_number_of_nots_does_not_count() -> None:
    def types(name: str) -> dict[str, Any]:
        return {
            "ConditionName": "ContentContainsSensitiveInformation",
            "Value": [{"groups": [{"name": "g", "sensitivetypes": [{"name": name}]}]}],
        }

    tree = {
        "Condition": {
            "Operator": "And",
            "SubConditions": [
                types("A"),
                {"Operator": "Not", "SubConditions": [types("B")]},
                {
                    "Operator": "Not",
                    "SubConditions": [{"Operator": "Not", "SubConditions": [types("C")]}],
                },
                {"Operator": "Nand", "SubConditions": [types("D")]},
            ],
        }
    }
    assert sensitive_types({"Name": "r", "AdvancedRule": json.dumps(tree)}) == ["A", "C"]


@pytest.mark.parametrize(
    "value",
    [
        "SSN",
        [[{"_key": "groups", "_value": "a, b"}]],
        [{"operator": "And"}],
    ],
)
def test_a_sensitive_type_value_of_an_unknown_shape_is_an_error_naming_the_rule(value: Any) -> None:
    with pytest.raises(UnreadableShape, match="rule 'PHI' ContentContainsSensitiveInformation"):
        sensitive_types({"Name": "PHI", "ContentContainsSensitiveInformation": value})


def test_an_advanced_rule_that_is_not_json_is_an_error() -> None:
    with pytest.raises(UnreadableShape, match="rule 'PHI' AdvancedRule is not JSON"):
        sensitive_types({"Name": "PHI", "AdvancedRule": "{not json"})
