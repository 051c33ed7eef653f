"""False passes a review of the scuba controls found (2026-12-01), each held here: an answer that
does not show a safeguard in force must not pass a control. Each test changes one recorded answer
of contoso-health (shapes as published) or calls the code that reads it, and each failed before
its fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from m365_sandbox import sandbox_config

from connectors.base import CollectContext
from connectors.m365.connector import M365Connector
from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.normalise import M365Settings, _allowed_domains, _dlp_rule
from connectors.m365.purview import UnreadableShape, dlp_rule_limits
from connectors.m365.sandbox.server import SECRET_ENV, Faults, Sandbox
from connectors.m365.threat_policies import (
    ANTI_PHISH,
    MALWARE,
    in_force,
    rule_reach,
    transport_rules,
)

from helpers import REPO
from m365_verdicts import NOW, evaluate_fetched

CONTOSO = REPO / "fixtures" / "tenants" / "contoso-health"
FABRIKAM = REPO / "fixtures" / "tenants" / "fabrikam-clinic"
PUBLISHED_RULE = REPO / "tests/data/m365-published/base/compliance/Get-DlpComplianceRule.json"
DOMAINS = {"contoso-health.org", "contoso-health.onmicrosoft.com"}
TASKS = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks."


def _contoso(path: str) -> Any:
    return json.loads((CONTOSO / f"{path}.json").read_text(encoding="utf-8"))


def _verdict(
    control: str,
    files: dict[str, Any],
    profile: str = "scuba",
    settings: M365Settings | None = None,
) -> tuple[str, str]:
    info, base = read_recorded_tenant(CONTOSO, NOW)
    fetched = dict(base)
    for key, body in files.items():
        fetched[key] = Fetched(key, 200, body, NOW)
    chosen = settings or M365Settings()
    result = evaluate_fetched(info, fetched, chosen, profile, [control])[control]
    return result.status, result.reason or ""


# Threat policies in force (threat_policies.py)


def test_a_custom_policy_named_like_a_preset_is_judged_as_custom() -> None:
    front_desk = "Strict Preset Security Policy - front desk"
    policies = [
        {"Identity": "Default", "IsDefault": True, "ZapEnabled": True},
        {"Identity": front_desk, "RecommendedPolicyType": "Custom", "ZapEnabled": False},
    ]
    rules = [
        {"MalwareFilterPolicy": front_desk, "State": "Enabled", "Priority": 0, "SentTo": ["x@y"]}
    ]
    section = in_force(MALWARE, policies, rules, [], DOMAINS)
    assert [(p["Identity"], p["tier"]) for p in section["in_force"]] == [
        (front_desk, "custom"),
        ("Default", "default"),
    ]


def test_an_enabled_preset_whose_policy_was_not_read_is_an_error() -> None:
    presets = [
        {
            "Identity": "Standard Preset Security Policy",
            "State": "Enabled",
            "MalwareFilterPolicy": "Standard Preset Security Policy1714032211847",
        }
    ]
    with pytest.raises(UnreadableShape, match="not among the policies read"):
        in_force(MALWARE, [{"Identity": "Default", "IsDefault": True}], [], presets, DOMAINS)
    # The same, end to end: the preset's policy left out of the anti-malware answer.
    malware = [p for p in _contoso("exo/Get-MalwareFilterPolicy") if p["IsDefault"]]
    status, reason = _verdict(
        "m365.defender.zero-hour-purge", {"exo/Get-MalwareFilterPolicy": malware}
    )
    assert status == "error" and "not among the policies read" in reason


def test_a_preset_policy_is_the_one_its_rule_names() -> None:
    # Two Standard-looking policies; the preset rule applies only the second.
    policies = [
        {"Identity": "Default", "IsDefault": True},
        {"Identity": "Standard Preset Security Policy1", "ZapEnabled": False},
        {"Identity": "Standard Preset Security Policy2", "ZapEnabled": True},
    ]
    presets = [
        {
            "Identity": "Standard Preset Security Policy",
            "State": "Enabled",
            "MalwareFilterPolicy": "Standard Preset Security Policy2",
        }
    ]
    section = in_force(MALWARE, policies, [], presets, DOMAINS)
    assert [p["Identity"] for p in section["in_force"]] == ["Standard Preset Security Policy2"]


def test_a_switched_off_anti_phishing_policy_with_an_enabled_rule_is_judged() -> None:
    policies = [
        {"Identity": "Office365 AntiPhish Default", "IsDefault": True, "Enabled": True},
        {"Identity": "Clinicians", "IsDefault": False, "Enabled": False},
    ]
    rules = [
        {"AntiPhishPolicy": "Clinicians", "State": "Enabled", "Priority": 0, "SentTo": ["x@y"]}
    ]
    section = in_force(ANTI_PHISH, policies, rules, [], DOMAINS)
    assert [p["Identity"] for p in section["in_force"]] == [
        "Clinicians",
        "Office365 AntiPhish Default",
    ]


def test_a_rule_of_unknown_priority_is_judged_whatever_covers_everyone() -> None:
    policies = [
        {"Identity": "Default", "IsDefault": True},
        {"Identity": "Everyone"},
        {"Identity": "Weak"},
    ]
    rules = [
        {"MalwareFilterPolicy": "Everyone", "State": "Enabled", "Priority": 0},
        {"MalwareFilterPolicy": "Weak", "State": "Enabled", "Priority": None, "SentTo": ["x@y"]},
    ]
    section = in_force(MALWARE, policies, rules, [], DOMAINS)
    assert [p["Identity"] for p in section["in_force"]] == ["Everyone", "Weak"]
    assert section["everyone_covered"] is True


def test_a_recipient_condition_named_without_its_list_narrows() -> None:
    base = {"State": "Enabled", "Priority": 0}
    for predicate in ("SentToPredicate", "SentToMemberOfPredicate", "RecipientDomainIsPredicate"):
        assert rule_reach({**base, "Conditions": [TASKS + predicate]}, DOMAINS) == "some"
    listed = {**base, "Conditions": [TASKS + "RecipientDomainIsPredicate"]}
    assert rule_reach({**listed, "RecipientDomainIs": sorted(DOMAINS)}, DOMAINS) == "everyone"


def test_safe_attachments_switched_off_fails_whatever_the_action() -> None:
    policies = _contoso("exo/Get-SafeAttachmentPolicy")
    for policy in policies:
        policy["Enable"] = False
        assert policy["Action"] == "Block"
    control = "m365.defender.safe-attachments-block"
    assert _verdict(control, {})[0] == "pass"
    status, reason = _verdict(control, {"exo/Get-SafeAttachmentPolicy": policies})
    assert status == "fail" and "Enable" in reason


# Connection filter, anti-spam and audit log retention


@pytest.mark.parametrize("control", ["m365.exo.no-ip-allow-list", "m365.exo.safe-list-off"])
def test_no_connection_filter_policy_at_all_fails(control: str) -> None:
    assert _verdict(control, {})[0] == "pass"
    assert _verdict(control, {"exo/Get-HostedConnectionFilterPolicy": []})[0] == "fail"


def test_an_anti_spam_policy_that_does_not_say_its_allowed_domains_fails() -> None:
    policies = _contoso("exo/Get-HostedContentFilterPolicy")
    for policy in policies:
        del policy["AllowedSenderDomains"]
    control = "m365.exo.no-allowed-sender-domains"
    assert _verdict(control, {"exo/Get-HostedContentFilterPolicy": policies})[0] == "fail"


def test_a_shorter_audit_retention_policy_that_takes_precedence_fails() -> None:
    policies = _contoso("compliance/Get-UnifiedAuditLogRetentionPolicy")
    control = "m365.audit.log-retention"
    assert _verdict(control, {})[0] == "pass"
    covering = min(p["Priority"] for p in policies)
    shorter = {
        **policies[0],
        "Name": "Mailbox items, a week",
        "Identity": "Mailbox items, a week",
        "Priority": covering - 1,
        "RetentionDuration": "SevenDays",
        "RecordTypes": ["ExchangeItem"],
    }
    files = {"compliance/Get-UnifiedAuditLogRetentionPolicy": [shorter, *policies]}
    status, reason = _verdict(control, files)
    assert status == "fail", reason
    # Behind the covering policy it shortens nothing the covering policy keeps.
    behind = {**shorter, "Priority": max(p["Priority"] for p in policies) + 1}
    files = {"compliance/Get-UnifiedAuditLogRetentionPolicy": [*policies, behind]}
    assert _verdict(control, files)[0] == "pass"


# DLP rules


def _published_rule() -> dict[str, Any]:
    rule = json.loads(PUBLISHED_RULE.read_text(encoding="utf-8"))[0]
    return {k: v for k, v in rule.items() if "@" not in k}


def test_the_published_dlp_rule_has_no_limit_and_each_condition_or_exception_is_one() -> None:
    rule = _published_rule()
    assert rule["AccessScope"] == "NotInOrganization"
    assert dlp_rule_limits(rule) == []
    for member, value, limit in [
        ("ExceptIfRecipientDomainIs", ["gmail.com"], "ExceptIfRecipientDomainIs"),
        ("RecipientDomainIs", ["example.invalid"], "RecipientDomainIs"),
        ("AccessScope", "InOrganization", "AccessScope"),
        ("ExpiryDate", "2025-01-31T00:00:00Z", "ExpiryDate"),
        ("SomeConditionAddedLater", ["x"], "SomeConditionAddedLater"),
        ("DocumentIsPasswordProtected", True, "DocumentIsPasswordProtected"),
    ]:
        assert dlp_rule_limits({**rule, member: value}) == [limit], member


def test_an_advanced_rule_condition_beside_the_types_is_a_limit() -> None:
    rule = _published_rule()
    tree = json.loads(rule["AdvancedRule"])
    assert dlp_rule_limits({**rule, "IsAdvancedRule": True}) == []
    tree["Condition"]["SubConditions"].append(
        {"Operator": "Not", "SubConditions": [{"ConditionName": "FromMemberOf", "Value": ["x"]}]}
    )
    tree["Condition"]["SubConditions"].append({"ConditionName": "SenderDomainIs", "Value": ["y"]})
    limits = dlp_rule_limits({**rule, "AdvancedRule": json.dumps(tree)})
    assert limits == ["AdvancedRule Not FromMemberOf", "AdvancedRule SenderDomainIs"]


def test_blocking_anyone_links_only_or_an_unknown_state_does_not_count() -> None:
    rule = _published_rule()
    assert _dlp_rule(rule)["blocks"] is True
    for scope in ("PerUser", "All"):
        assert _dlp_rule({**rule, "BlockAccessScope": scope})["blocks"] is True
    for scope in ("PerAnonymousUser", None, "NotInOrganization"):
        assert _dlp_rule({**rule, "BlockAccessScope": scope})["blocks"] is False
    assert _dlp_rule({k: v for k, v in rule.items() if k != "Disabled"})["enabled"] is False


def test_a_dlp_rule_with_an_exception_does_not_protect_phi() -> None:
    rules = _contoso("compliance/Get-DlpComplianceRule")
    assert _verdict("m365.dlp.phi-protection", {})[0] == "pass"
    for rule in rules:
        rule["ExceptIfRecipientDomainIs"] = ["gmail.com"]
    status, reason = _verdict(
        "m365.dlp.phi-protection", {"compliance/Get-DlpComplianceRule": rules}
    )
    assert status == "fail", reason


def test_dlp_in_simulation_without_notifications_notifies_no_one() -> None:
    policies = _contoso("compliance/Get-DlpCompliancePolicy")
    control = "m365.purview.dlp-user-notifications"
    assert _verdict(control, {})[0] == "pass"
    for policy in policies:
        policy["Mode"] = "TestWithoutNotifications"
    assert _verdict(control, {"compliance/Get-DlpCompliancePolicy": policies})[0] == "fail"


# Teams external access


@pytest.mark.parametrize(
    ("value", "domains", "all_known", "understood"),
    [
        (
            "Microsoft.Rtc.Management.WritableConfig.Policy.Edge.AllowAllKnownDomains",
            [],
            True,
            True,
        ),
        ("Microsoft.Rtc.Management.WritableConfig.Policy.Edge.AllowList", [], False, False),
        ("System.Collections.Generic.List`1[System.String]", [], False, False),
        ("Domain=bad_name", [], False, False),
        ("Domain=contoso.com", ["contoso.com"], False, True),
        ("partner.example.org", ["partner.example.org"], False, True),
    ],
)
def test_a_teams_allowed_domains_string_counts_only_as_a_domain_name(
    value: str, domains: list[str], all_known: bool, understood: bool
) -> None:
    assert _allowed_domains(value) == {
        "domains": domains,
        "all_known_domains": all_known,
        "understood": understood,
    }


# Exchange Online: answers that show less than the tenant has


def test_a_page_without_its_items_is_an_error_not_the_end_of_the_list() -> None:
    # Page two of the users and of the mailboxes comes back without `value`: before, the
    # read ended there as if the list were whole (and bypassing accounts on it were lost).
    paths = ("graph/v1.0/users", "exo/Get-Mailbox")
    with Sandbox(FABRIKAM, page_size=10, faults=Faults(valueless=paths)) as sandbox:
        connector = M365Connector(sandbox_config(sandbox), Path())
        connector.environ = {SECRET_ENV: sandbox.client_secret}
        ctx = CollectContext(
            connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
        )
        asyncio.run(connector.collect(ctx))
    sections = {s.name: s for s in ctx.sections}
    assert sections["m365.exo.mailboxes"].status == "error"
    assert "not a page of objects" in (sections["m365.exo.mailboxes"].reason or "")
    registration = sections["m365.entra.user_registration"]
    assert registration.status == "error"
    assert "no `value` list" in (registration.reason or "")


@pytest.mark.parametrize(
    "control", ["m365.exo.calendar-not-shared-with-all", "m365.exo.contacts-not-shared-with-all"]
)
def test_no_sharing_policy_at_all_fails(control: str) -> None:
    assert _verdict(control, {})[0] == "pass"
    assert _verdict(control, {"exo/Get-SharingPolicy": []})[0] == "fail"


def test_no_account_in_the_audit_bypass_answer_while_mailboxes_exist_is_an_error() -> None:
    control = "m365.audit.mailbox-auditing"
    assert _verdict(control, {})[0] == "pass"
    status, reason = _verdict(control, {"exo/Get-MailboxAuditBypassAssociation": []})
    assert status == "error" and "listed no account" in reason


def test_an_empty_domain_list_is_an_error_for_dkim() -> None:
    control = "m365.exo.dkim-signing"
    assert _verdict(control, {})[0] == "pass"
    empty = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#domains", "value": []}
    status, reason = _verdict(control, {"graph/v1.0/domains": empty})
    assert status == "error" and "lists no domain" in reason


def test_an_external_sender_warning_counts_only_while_in_effect_and_reached() -> None:
    control = "m365.exo.external-sender-warning"
    rules = _contoso("exo/Get-TransportRule")
    assert _verdict(control, {})[0] == "pass"
    expired = [{**r, "ExpiryDate": "2025-01-31T00:00:00.0000000+00:00"} for r in rules]
    assert _verdict(control, {"exo/Get-TransportRule": expired})[0] == "fail"
    later = [{**r, "ActivationDate": "2099-01-01T00:00:00Z"} for r in rules]
    assert _verdict(control, {"exo/Get-TransportRule": later})[0] == "fail"
    unreadable = [{**r, "ExpiryDate": "the end of the quarter"} for r in rules]
    assert _verdict(control, {"exo/Get-TransportRule": unreadable})[0] == "fail"
    stopper = {
        "Identity": "Journal everything",
        "Name": "Journal everything",
        "Priority": -1,
        "State": "Enabled",
        "Mode": "Enforce",
        "StopRuleProcessing": True,
    }
    ahead = [stopper, *({**r, "Priority": max(r.get("Priority") or 0, 0)} for r in rules)]
    assert _verdict(control, {"exo/Get-TransportRule": ahead})[0] == "fail"
    # In a test mode it acts on nothing, and stops nothing.
    testing = [{**stopper, "Mode": "Audit"}, *ahead[1:]]
    assert _verdict(control, {"exo/Get-TransportRule": testing})[0] == "pass"


def test_rules_ahead_that_stop_processing_are_named() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    rules = [
        {
            "Name": "A",
            "Priority": 0,
            "State": "Enabled",
            "Mode": "Enforce",
            "StopRuleProcessing": True,
        },
        {"Name": "B", "Priority": 1, "State": "Disabled", "StopRuleProcessing": True},
        {"Name": "C", "Priority": 2, "State": "Enabled", "StopRuleProcessing": None},
        {"Name": "D", "Priority": 3, "State": "Enabled", "StopRuleProcessing": False},
    ]
    facts = {f["Name"]: f["stopped_by"] for f in transport_rules(rules, now)}
    assert facts == {"A": [], "B": ["A"], "C": ["A"], "D": ["A", "C"]}


# Entra ID: privileged roles, PIM alerts, security defaults

CA = "graph/v1.0/identity/conditionalAccess/policies"
ROLES = "graph/v1.0/roleManagement/directory/roleDefinitions"
GLASS = M365Settings(break_glass=("breakglass01@contoso-health.onmicrosoft.com",))


def _without_admin_policy() -> dict[str, Any]:
    policies = _contoso(CA)
    policies["value"] = [p for p in policies["value"] if "administrators" not in p["displayName"]]
    return {CA: policies}


def test_plain_mfa_for_administrators_fails_ms_aad_3_6_under_scuba() -> None:
    control = "m365.mfa.admin-roles"
    assert _verdict(control, {}, settings=GLASS)[0] == "pass"
    files = _without_admin_policy()  # leaves "Require MFA for all users", plain MFA
    assert _verdict(control, files, "hipaa", GLASS)[0] == "pass"
    assert _verdict(control, files, "scuba", GLASS)[0] == "fail"


def test_every_scuba_privileged_role_must_be_covered() -> None:
    policies = _contoso(CA)
    admins = next(p for p in policies["value"] if "administrators" in p["displayName"])
    user_admin = "fe930be7-5e62-47db-91af-98c3a49a38b1"
    admins["conditions"]["users"]["includeRoles"].remove(user_admin)
    assert _verdict("m365.mfa.admin-roles", {CA: policies}, settings=GLASS)[0] == "fail"
    # Not a role the HIPAA profiles protect by default.
    assert _verdict("m365.mfa.admin-roles", {CA: policies}, "hipaa", GLASS)[0] == "pass"


def test_role_definitions_without_a_built_in_privileged_role_are_an_error() -> None:
    definitions = _contoso(ROLES)
    definitions["value"] = [
        r for r in definitions["value"] if r["displayName"] != "Exchange Administrator"
    ]
    status, reason = _verdict("m365.mfa.admin-roles", {ROLES: definitions}, "hipaa", GLASS)
    assert status == "error" and "Exchange Administrator" in reason
    empty = {**definitions, "value": []}
    assert _verdict("m365.mfa.admin-roles", {ROLES: empty}, "hipaa", GLASS)[0] == "error"


@pytest.mark.parametrize(
    "control",
    [
        "m365.entra.privileged-assignment-alerts",
        "m365.entra.global-admin-activation-alert",
        "m365.entra.privileged-activation-alerts",
    ],
)
def test_a_notification_rule_at_level_none_alerts_no_one(control: str) -> None:
    path = "graph/v1.0/policies/roleManagementPolicyAssignments"
    assert _verdict(control, {}, settings=GLASS)[0] == "pass"
    text = (CONTOSO / f"{path}.json").read_text(encoding="utf-8")
    silent = json.loads(text.replace('"notificationLevel": "All"', '"notificationLevel": "None"'))
    assert _verdict(control, {path: silent}, settings=GLASS)[0] == "fail"


def test_security_defaults_alone_do_not_enforce_mfa_for_all_under_scuba() -> None:
    files = {
        CA: {**_contoso(CA), "value": []},
        "graph/v1.0/policies/identitySecurityDefaultsEnforcementPolicy": {
            **_contoso("graph/v1.0/policies/identitySecurityDefaultsEnforcementPolicy"),
            "isEnabled": True,
        },
    }
    assert _verdict("m365.mfa.all-users", files, "hipaa", GLASS)[0] == "pass"
    assert _verdict("m365.mfa.all-users", files, "scuba", GLASS)[0] == "fail"


def test_a_group_named_like_a_break_glass_account_is_not_set_aside() -> None:
    path = "graph/v1.0/roleManagement/directory/roleAssignmentScheduleInstances"
    body = _contoso(path)
    body["value"].append(
        {
            "id": "grp-1",
            "principalId": "0c6a3f5e-1111-4e2b-9d1a-2b3c4d5e6f70",
            "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10",
            "directoryScopeId": "/",
            "assignmentType": "Assigned",
            "memberType": "Direct",
            "startDateTime": "2026-01-05T09:00:00Z",
            "endDateTime": None,
            "principal": {
                "@odata.type": "#microsoft.graph.group",
                "id": "0c6a3f5e-1111-4e2b-9d1a-2b3c4d5e6f70",
                "displayName": "breakglass01@contoso-health.onmicrosoft.com",
            },
        }
    )
    control = "m365.entra.no-permanent-active-admins"
    assert _verdict(control, {}, settings=GLASS)[0] == "pass"
    assert _verdict(control, {path: body}, settings=GLASS)[0] == "fail"


def test_a_condition_only_graph_beta_shows_narrows_the_policy() -> None:
    # deviceStates is a beta member of the conditions (conditionalAccessDeviceStates): a policy
    # that v1.0 shows for every sign-in leaves out compliant and domain-joined devices.
    beta = "graph/beta/identity/conditionalAccess/policies"
    answer = _contoso(beta)
    for policy in answer["value"]:
        policy["conditions"]["deviceStates"] = {
            "includeStates": ["All"],
            "excludeStates": ["Compliant", "DomainJoined"],
        }
    for control in ("m365.mfa.all-users", "m365.mfa.admin-roles", "m365.auth.legacy-blocked"):
        assert _verdict(control, {}, settings=GLASS)[0] == "pass", control
        assert _verdict(control, {beta: answer}, settings=GLASS)[0] == "fail", control
    # A policy Graph beta does not list at all is not known to be unconditioned.
    missing = {**answer, "value": []}
    assert _verdict("m365.mfa.all-users", {beta: missing}, settings=GLASS)[0] == "fail"


# Entra ID: consent, passwords, agents

AUTHZ = "graph/v1.0/policies/authorizationPolicy"
EXCHANGE_APP = "00000002-0000-0ff1-ce00-000000000000"


def _classifications(app: str) -> str:
    return f"graph/v1.0/servicePrincipals(appId='{app}')/delegatedPermissionClassifications"


def _consent(assigned: list[str]) -> dict[str, Any]:
    policy = _contoso(AUTHZ)
    policy["defaultUserRolePermissions"]["permissionGrantPoliciesAssigned"] = assigned
    return policy


def test_low_impact_consent_to_another_apis_mail_permission_fails() -> None:
    control = "m365.apps.user-consent-restricted"
    low = _consent(["ManagePermissionGrantsForSelf.microsoft-user-default-low"])
    assert _verdict(control, {AUTHZ: low})[0] == "pass"  # Graph: sign-in permissions only
    ews = {
        "value": [
            {
                "id": "ews1",
                "permissionId": "3b5f3d61-589b-4a3c-a359-5dd4b5ee5bd5",
                "permissionName": "EWS.AccessAsUser.All",
                "classification": "low",
            }
        ]
    }
    files = {AUTHZ: low, _classifications(EXCHANGE_APP): ews}
    status, reason = _verdict(control, files)
    assert status == "fail", reason
    # A tenant without that API's service principal: Graph answers 404, nothing to consent to.
    info, base = read_recorded_tenant(CONTOSO, NOW)
    fetched = {**base, AUTHZ: Fetched(AUTHZ, 200, low, NOW)}
    path = _classifications(EXCHANGE_APP)
    fetched[path] = Fetched(path, 404, None, NOW, "Request_ResourceNotFound")
    result = evaluate_fetched(info, fetched, M365Settings(), "scuba", [control])[control]
    assert result.status == "pass"


@pytest.mark.parametrize("permission", ["MailboxItem.Read", "ChatMessage.Read"])
def test_graph_mail_and_chat_permissions_classified_low_fail(permission: str) -> None:
    control = "m365.apps.user-consent-restricted"
    path = _classifications("00000003-0000-0000-c000-000000000000")
    listed = _contoso(path)
    listed["value"].append(
        {"id": "x", "permissionId": "x", "permissionName": permission, "classification": "low"}
    )
    low = _consent(["ManagePermissionGrantsForSelf.microsoft-user-default-low"])
    assert _verdict(control, {AUTHZ: low, path: listed})[0] == "fail"


def test_owner_consent_beyond_microsofts_team_and_chat_policies_fails() -> None:
    control = "m365.apps.user-consent-restricted"
    prefix = "ManagePermissionGrantsForOwnedResource."
    team = _consent([prefix + "microsoft-dynamically-managed-permissions-for-team"])
    assert _verdict(control, {AUTHZ: team})[0] == "pass"
    for other in ("microsoft-all-application-permissions-for-group", "contoso-any-permission"):
        assert _verdict(control, {AUTHZ: _consent([prefix + other])})[0] == "fail", other
    assert _verdict(control, {AUTHZ: _consent(["SomeFutureKind.of-consent"])})[0] == "fail"


def test_passwords_never_expire_judges_what_it_cannot_exempt() -> None:
    control = "m365.entra.passwords-never-expire"
    assert _verdict(control, {})[0] == "pass"
    domains = _contoso("graph/v1.0/domains")
    empty = {**domains, "value": []}
    status, reason = _verdict(control, {"graph/v1.0/domains": empty})
    assert status == "error" and "lists no domain" in reason
    odd = json.loads(json.dumps(domains))
    for domain in odd["value"]:
        domain["passwordValidityPeriodInDays"] = 90
        domain.pop("isRoot", None)
    assert _verdict(control, {"graph/v1.0/domains": odd})[0] == "fail"


def test_an_agent_exclusion_of_another_shape_is_an_exclusion() -> None:
    beta = "graph/beta/identity/conditionalAccess/policies"
    answer = _contoso(beta)
    control = "m365.entra.risky-agents-blocked"
    assert _verdict(control, {}, settings=GLASS)[0] == "pass"
    for policy in answer["value"]:
        clients = policy["conditions"].get("clientApplications")
        if isinstance(clients, dict) and clients.get("includeAgentIdServicePrincipals"):
            clients["excludeAgentIdServicePrincipals"] = "7c1e3a9b-0000-4000-8000-000000000001"
    assert _verdict(control, {beta: answer}, settings=GLASS)[0] == "fail"


def test_a_permission_list_longer_than_one_batch_page_is_an_error(tmp_path: Path) -> None:
    # The classifications are read in $batch calls, which do not follow a next link: a list
    # that does not fit one page is not read whole, and users' low-impact consent is not judged.
    tenant = tmp_path / "tenant"
    shutil.copytree(CONTOSO, tenant)
    authz = tenant / f"{AUTHZ}.json"
    policy = json.loads(authz.read_text(encoding="utf-8"))
    assigned = ["ManagePermissionGrantsForSelf.microsoft-user-default-low"]
    policy["defaultUserRolePermissions"]["permissionGrantPoliciesAssigned"] = assigned
    authz.write_text(json.dumps(policy), encoding="utf-8")
    sections = {}
    for page_size in (100, 2):
        with Sandbox(tenant, page_size=page_size) as sandbox:
            connector = M365Connector(sandbox_config(sandbox), Path())
            connector.environ = {SECRET_ENV: sandbox.client_secret}
            ctx = CollectContext(
                connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
            )
            asyncio.run(connector.collect(ctx))
        sections[page_size] = next(s for s in ctx.sections if s.name == "m365.entra.user_consent")
    assert sections[100].status == "ok"
    assert sections[2].status == "error"
    assert "more than one page inside $batch" in (sections[2].reason or "")
