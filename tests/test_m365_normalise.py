"""Microsoft 365 normalisation on the recorded tenants, evaluated with the shipped policies:
contoso-health is mostly compliant, fabrikam-clinic fails each planted problem with evidence
pointing at the offending value."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from auditor.results import Result
from connectors.m365.conditional_access import policy_facts
from connectors.m365.fetched import read_recorded_tenant
from connectors.m365.normalise import M365Settings, normalise
from connectors.m365.purview import sensitive_types

from helpers import REPO
from m365_verdicts import NOW, evaluate_fetched

TENANTS = REPO / "fixtures" / "tenants"
CONTOSO_BREAK_GLASS = ("breakglass01@contoso-health.onmicrosoft.com",)


def _evaluate(tenant: str, settings: M365Settings, profile: str = "hipaa") -> dict[str, Result]:
    info, fetched = read_recorded_tenant(TENANTS / tenant, NOW)
    return evaluate_fetched(info, fetched, settings, profile)


def _evidence(result: Result) -> dict[tuple[str, str], Any]:
    return {(e.section, e.pointer): e.value for e in result.evidence}


def test_contoso_passes_everything_but_teams_retention() -> None:
    results = _evaluate("contoso-health", M365Settings(break_glass=CONTOSO_BREAK_GLASS))
    failing = {c: r.reason for c, r in results.items() if r.status != "pass"}
    assert set(failing) == {"m365.retention.teams"}, failing
    mfa = results["m365.mfa.all-users"]
    assert ("m365.entra.conditional_access", "/0/break_glass_exclusions") in _evidence(mfa)


def test_undeclared_break_glass_exclusion_is_a_hole() -> None:
    results = _evaluate("contoso-health", M365Settings())
    mfa = results["m365.mfa.all-users"]
    assert mfa.status == "fail"
    evidence = _evidence(mfa)
    hole = evidence[("m365.entra.conditional_access", "/0/unexpected_exclusions")]
    assert hole == [
        {"kind": "user", "id": hole[0]["id"], "name": "breakglass01@contoso-health.onmicrosoft.com"}
    ]


def test_an_audit_retention_policy_without_enabled_does_not_count() -> None:
    """A policy not known to be on retains nothing: absent Enabled is not taken for true."""
    info, fetched = read_recorded_tenant(TENANTS / "contoso-health", NOW)
    path = "compliance/Get-UnifiedAuditLogRetentionPolicy"
    answer = fetched[path]
    without = [{k: v for k, v in p.items() if k != "Enabled"} for p in answer.data]
    fetched[path] = dataclasses.replace(answer, data=without, body=None)
    settings = M365Settings(break_glass=CONTOSO_BREAK_GLASS)
    result = evaluate_fetched(info, fetched, settings, "hipaa")["m365.audit.log-retention"]
    assert result.status == "fail"
    assert "Enabled" in (result.reason or "")


@pytest.fixture(scope="module")
def fabrikam() -> dict[str, Result]:
    return _evaluate("fabrikam-clinic", M365Settings())


def test_fabrikam_report_only_mfa_policy_does_not_count(fabrikam: dict[str, Result]) -> None:
    result = fabrikam["m365.mfa.all-users"]
    assert result.status == "fail"
    evidence = _evidence(result)
    assert evidence[("m365.entra.conditional_access", "/0/enforced")] is False
    assert evidence[("m365.entra.conditional_access", "/1/unexpected_exclusions")] == [
        {"kind": "group", "id": "874a660e-afb3-5138-910b-c13a094d70a0", "name": "Contractors"}
    ]


@pytest.mark.parametrize(
    ("control", "section", "pointer", "value"),
    [
        (
            "m365.exo.smtp-auth-disabled",
            "m365.exo.transport_config",
            "/0/SmtpClientAuthenticationDisabled",
            False,
        ),
        (
            "m365.audit.unified-log",
            "m365.exo.admin_audit_log_config",
            "/0/UnifiedAuditLogIngestionEnabled",
            False,
        ),
        ("m365.exo.connectors-require-tls", "m365.exo.inbound_connectors", "/0/RequireTls", False),
        (
            "m365.exo.external-forwarding-blocked",
            "m365.exo.remote_domains",
            "/0/AutoForwardEnabled",
            True,
        ),
        (
            "m365.exo.external-forwarding-blocked",
            "m365.exo.outbound_spam_policies",
            "/0/AutoForwardingMode",
            "On",
        ),
        ("m365.dlp.phi-protection", "m365.purview.dlp", "/0/Mode", "TestWithNotifications"),
        ("m365.exo.dkim-signing", "m365.exo.dkim_domains", "/0/Enabled", False),
        (
            "m365.sharepoint.external-sharing-restricted",
            "m365.sharepoint.settings",
            "/sharingCapability",
            "externalUserAndGuestSharing",
        ),
        (
            "m365.entra.guest-invites-restricted",
            "m365.entra.authorization_policy",
            "/allowInvitesFrom",
            "everyone",
        ),
        (
            "m365.audit.mailbox-auditing",
            "m365.exo.mailbox_auditing",
            "/bypassed",
            [{"Identity": "svc-scanner", "Name": "svc-scanner"}],
        ),
    ],
)
def test_fabrikam_planted_problems(
    fabrikam: dict[str, Result], control: str, section: str, pointer: str, value: Any
) -> None:
    result = fabrikam[control]
    assert result.status == "fail", result.reason
    assert _evidence(result)[(section, pointer)] == value


def test_fabrikam_names_the_unregistered_users(fabrikam: dict[str, Result]) -> None:
    result = fabrikam["m365.mfa.registered-users"]
    named = {e.context["userPrincipalName"] for e in result.evidence}
    assert named == {
        "frontdesk@fabrikamclinic.com",
        "scanner@fabrikamclinic.com",
        "user007@fabrikamclinic.com",
    }


def test_proposed_rule_changes_the_verdicts_the_catalog_says() -> None:
    nprm = _evaluate(
        "contoso-health", M365Settings(break_glass=CONTOSO_BREAK_GLASS), "hipaa-nprm-2025"
    )
    assert nprm["m365.audit.log-retention"].status == "fail"  # one year is not six
    assert (
        nprm["m365.mfa.admin-roles"].status == "pass"
    )  # contoso's admins use phishing-resistant MFA
    assert nprm["m365.apps.user-consent-restricted"].status == "fail"  # strictly no consent at all


def _ca(**overrides: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "id": "p",
        "displayName": "p",
        "state": "enabled",
        "conditions": {
            "clientAppTypes": ["all"],
            "applications": {"includeApplications": ["All"]},
            "users": {"includeUsers": ["All"], "excludeUsers": ["bg-id"]},
        },
        "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
    }
    for key, value in overrides.items():
        policy[key] = value
    return policy


def conditional_access_policy(
    policy: dict[str, Any], break_glass: set[str], names: dict[str, str]
) -> dict[str, Any]:
    return policy_facts(policy, break_glass, names, {})


def test_a_mailbox_with_audit_enabled_false_is_ignored_and_the_evidence_says_so(
    fabrikam: dict[str, Result],
) -> None:
    # fabrikam fails for its bypassing account only: the mailbox's own setting is no failure.
    failing = _evidence(fabrikam["m365.audit.mailbox-auditing"])
    assert {pointer for _section, pointer in failing} == {"/bypassed"}
    info, fetched = read_recorded_tenant(TENANTS / "fabrikam-clinic", NOW)
    bypass = fetched["exo/Get-MailboxAuditBypassAssociation"]
    fetched["exo/Get-MailboxAuditBypassAssociation"] = dataclasses.replace(
        bypass, data=[b for b in bypass.data if not b["AuditBypassEnabled"]]
    )
    result = evaluate_fetched(info, fetched, M365Settings())["m365.audit.mailbox-auditing"]
    assert result.status == "pass", result.reason
    evidence = _evidence(result)
    section = "m365.exo.mailbox_auditing"
    assert evidence[(section, "/mailboxes_audit_enabled_false")] == ["frontdesk"]
    assert evidence[(section, "/mailbox_audit_enabled_ignored")] is True


def test_mfa_or_another_control_does_not_require_mfa() -> None:
    facts = conditional_access_policy(
        _ca(grantControls={"operator": "OR", "builtInControls": ["mfa", "compliantDevice"]}),
        {"bg-id"},
        {},
    )
    assert facts["requires_mfa"] is False
    facts = conditional_access_policy(
        _ca(grantControls={"operator": "AND", "builtInControls": ["mfa", "compliantDevice"]}),
        {"bg-id"},
        {},
    )
    assert facts["requires_mfa"] is True


def test_narrowing_conditions_and_exclusions_are_facts() -> None:
    conditions = {
        "clientAppTypes": ["browser"],
        "locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]},
        "applications": {
            "includeApplications": ["All"],
            "excludeApplications": ["00000002-0000-0ff1-ce00-000000000000"],
        },
        "users": {
            "includeUsers": ["All"],
            "excludeUsers": ["bg-id", "someone"],
            "excludeRoles": ["r1"],
            "excludeGuestsOrExternalUsers": {"guestOrExternalUserTypes": "b2bCollaborationGuest"},
        },
    }
    facts = conditional_access_policy(
        _ca(conditions=conditions), {"bg-id"}, {"someone": "someone@x.org", "r1": "Global Reader"}
    )
    assert facts["scoped_by"] == ["locations", "clientAppTypes"]
    assert [(e["kind"], e["name"]) for e in facts["unexpected_exclusions"]] == [
        ("user", "someone@x.org"),
        ("role", "Global Reader"),
        ("guests", "b2bCollaborationGuest"),
        ("application", "00000002-0000-0ff1-ce00-000000000000"),
    ]
    assert [e["id"] for e in facts["break_glass_exclusions"]] == ["bg-id"]


def test_phishing_resistant_strength() -> None:
    strength = {
        "id": "s",
        "displayName": "Phishing-resistant MFA",
        "allowedCombinations": ["fido2", "windowsHelloForBusiness"],
    }
    facts = conditional_access_policy(
        _ca(
            grantControls={
                "operator": "OR",
                "builtInControls": [],
                "authenticationStrength": strength,
            }
        ),
        set(),
        {},
    )
    assert facts["requires_mfa"] and facts["phishing_resistant"]
    strength["allowedCombinations"] = ["fido2", "password,sms"]
    assert (
        conditional_access_policy(
            _ca(
                grantControls={
                    "operator": "OR",
                    "builtInControls": [],
                    "authenticationStrength": strength,
                }
            ),
            set(),
            {},
        )["phishing_resistant"]
        is False
    )


def test_sensitive_types_from_rest_pairs_hashtables_and_advanced_rules() -> None:
    rest = [
        [
            {"_key": "name", "_value": "U.S. Social Security Number (SSN)"},
            {"_key": "mincount", "_value": "1"},
        ]
    ]
    assert sensitive_types({"ContentContainsSensitiveInformation": rest}) == [
        "U.S. Social Security Number (SSN)"
    ]
    grouped = [
        {
            "groups": [
                {
                    "name": "Default",
                    "sensitivetypes": [
                        {"name": "Drug Enforcement Agency (DEA) Number", "mincount": "1"}
                    ],
                }
            ],
            "operator": "And",
        }
    ]
    assert sensitive_types({"ContentContainsSensitiveInformation": grouped}) == [
        "Drug Enforcement Agency (DEA) Number"
    ]
    advanced = json.dumps(
        {
            "Version": "1.0",
            "Condition": {
                "Operator": "And",
                "SubConditions": [
                    {
                        "ConditionName": "ContentContainsSensitiveInformation",
                        "Value": [
                            {
                                "groups": [
                                    {
                                        "Operator": "Or",
                                        "Name": "Default",
                                        "Sensitivetypes": [
                                            {
                                                "Name": "International Classification of Diseases (ICD-10-CM)",
                                                "Id": "3356946c-6bb7-449b-b253-6ffa419c0ce7",
                                                "Mincount": 1,
                                            }
                                        ],
                                    }
                                ]
                            }
                        ],
                    }
                ],
            },
        }
    )
    assert sensitive_types({"AdvancedRule": advanced}) == [
        "International Classification of Diseases (ICD-10-CM)"
    ]


def test_missing_answers_become_error_sections_with_the_reason() -> None:
    _info, fetched = read_recorded_tenant(TENANTS / "contoso-health", NOW)
    del fetched["compliance/Get-DlpCompliancePolicy"]
    sections = {s.name: s for s in normalise(fetched, M365Settings())}
    assert sections["m365.purview.dlp"].status == "error"
    assert (
        sections["m365.purview.dlp"].reason
        == "compliance/Get-DlpCompliancePolicy was not collected"
    )
    assert sections["m365.exo.transport_config"].status == "ok"


def test_recorded_fixture_paths_follow_the_contract_layout() -> None:
    for tenant in ("contoso-health", "fabrikam-clinic"):
        root = TENANTS / tenant
        info = json.loads((root / "tenant.json").read_text())
        assert set(info) == {"tenant_id", "default_domain", "display_name"}
        for path in root.rglob("*.json"):
            relative = path.relative_to(root).as_posix()
            assert relative == "tenant.json" or relative.split("/")[0] in (
                "graph",
                "exo",
                "compliance",
                "teams",
                "sharepoint",
            )
            body = json.loads(path.read_text())
            if relative.startswith(("exo/", "compliance/", "teams/")):
                assert isinstance(body, list), relative
            if relative.startswith("sharepoint/"):
                assert isinstance(body, dict), relative


def test_a_strength_is_judged_by_the_tenants_own_list_of_strengths() -> None:
    _info, fetched = read_recorded_tenant(TENANTS / "contoso-health", NOW)
    policies = fetched["graph/v1.0/identity/conditionalAccess/policies"]
    strengths = fetched["graph/v1.0/policies/authenticationStrengthPolicies"]
    custom = {"id": "c0ffee00-0000-4000-8000-000000000001", "displayName": "Sign-in"}
    edited = json.loads(json.dumps(policies.data))
    everyone = edited["value"][0]
    # The policy names the strength by id only; the tenant's list says what it allows.
    everyone["grantControls"] = {
        "operator": "OR",
        "builtInControls": [],
        "authenticationStrength": custom,
    }
    listed = json.loads(json.dumps(strengths.data))
    listed["value"].append({**custom, "policyType": "custom", "allowedCombinations": ["password"]})
    fetched[policies.path] = dataclasses.replace(policies, data=edited)
    fetched[strengths.path] = dataclasses.replace(strengths, data=listed)
    facts = next(
        s.data
        for s in normalise(fetched, M365Settings())
        if s.name == "m365.entra.conditional_access"
    )[0]
    assert facts["authentication_strength"]["allowedCombinations"] == ["password"]
    assert facts["authentication_strength"]["single_factor_combinations"] == ["password"]
    assert facts["requires_mfa"] is False
    # Without the list, a strength whose combinations are unknown vouches for nothing.
    del fetched[strengths.path]
    facts = next(
        s.data
        for s in normalise(fetched, M365Settings())
        if s.name == "m365.entra.conditional_access"
    )[0]
    assert facts["authentication_strength"]["resolved"] is False
    assert facts["requires_mfa"] is False


@pytest.mark.parametrize(
    "annotation", ["Identity@data.type", "Identity\\u0040data.type", "@odata.type"]
)
def test_annotations_are_stripped_from_cmdlet_answers_kept_as_bytes(annotation: str) -> None:
    # The connector keeps each admin-API answer's bytes beside its parsed objects; a scan of the
    # bytes decides whether the objects need their annotations stripped. `\u0040` is an `@`.
    from connectors.m365.fetched import Fetched
    from connectors.m365.normalise import SECTIONS

    name = json.loads(f'"{annotation}"')
    items = [{"Identity": "user01", name: "System.String", "AuditEnabled": True}]
    body = (
        b'[{"Identity":"user01","'
        + annotation.encode()
        + b'":"System.String","AuditEnabled":true}]'
    )
    fetched = {"exo/Get-Mailbox": Fetched("exo/Get-Mailbox", 200, items, NOW, body=body)}
    out = {s.name: s for s in normalise(fetched, M365Settings(), only=frozenset(SECTIONS))}
    assert out["m365.exo.mailboxes"].data == [{"Identity": "user01", "AuditEnabled": True}]


def test_cmdlet_answers_without_annotations_are_read_as_they_are() -> None:
    from connectors.m365.fetched import Fetched
    from connectors.m365.normalise import SECTIONS

    items = [{"Identity": "user01", "UserPrincipalName": "user01@example.org"}]
    body = json.dumps(items).encode()
    fetched = {"exo/Get-Mailbox": Fetched("exo/Get-Mailbox", 200, items, NOW, body=body)}
    out = {s.name: s for s in normalise(fetched, M365Settings(), only=frozenset(SECTIONS))}
    assert out["m365.exo.mailboxes"].data == items
    assert out["m365.exo.mailboxes"].data[0] is items[0]  # no copy of a tenant's mailboxes


@pytest.mark.parametrize(
    "tenant",
    [
        TENANTS / "contoso-health",
        TENANTS / "fabrikam-clinic",
        REPO / "tests" / "data" / "m365-published" / "base",
    ],
    ids=lambda p: p.name,
)
def test_each_section_is_the_same_from_only_the_answers_its_entry_names(tenant: Any) -> None:
    # A run that needs some sections reads only their answers (SECTION_READS): each section
    # built from those answers alone must be the one built from every answer.
    import fnmatch

    from connectors.m365.normalise import SECTION_READS, SECTIONS

    _info, fetched = read_recorded_tenant(tenant, NOW)
    assert set(SECTION_READS) == set(SECTIONS)
    settings = M365Settings(break_glass=("breakglass01@contoso-health.onmicrosoft.com",))
    for name, patterns in SECTION_READS.items():
        only = frozenset({name})
        (whole,) = normalise(fetched, settings, only=only)
        kept = {
            k: f for k, f in fetched.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)
        }
        (part,) = normalise(kept, settings, only=only)
        assert (part.status, part.reason, part.data) == (whole.status, whole.reason, whole.data), (
            name
        )
