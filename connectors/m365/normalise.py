"""Recorded Graph and Exchange answers -> the `m365.*` snapshot sections.

Sections keep the platform's own names and shapes wherever a policy can read them as they are
(the Exchange cmdlet sections are the cmdlet output). Where a fact only exists across several
answers (which Conditional Access policies apply to a role, which mail domains lack DKIM, what a
DLP rule detects) it is worked out here, as a neutral fact; what is *required* of those facts is
the policies' business, never this module's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

from connectors.m365 import shapes
from connectors.m365.conditional_access import (
    agent_policy_facts,
    beta_only_limits,
    policy_facts,
)
from connectors.m365.fetched import Fetched, FetchedMap
from connectors.m365.privileged import (
    PRIVILEGED_TEMPLATES,
    SCUBA_PRIVILEGED_ROLES,
    app_management,
    privileged_roles,
    role_management_policies,
)
from connectors.m365.privileged import privileged_user_ids as _user_ids
from connectors.m365.purview import (
    UnreadableShape,
    Workload,
    dlp_rule_limits,
    location_facts,
    sensitive_types,
)
from connectors.m365.shapes import CA_POLICIES, ShapeCheck
from connectors.m365.threat_policies import (
    ANTI_PHISH,
    CONTENT_FILTER,
    DEFENDER_CMDLETS,
    MALWARE,
    SAFE_ATTACHMENTS,
    SAFE_LINKS,
    Family,
    accepted_domains,
    in_force,
    priority,
    transport_rules,
    with_defender_hint,
)

# The tenant's authentication strengths, built-in and custom (Graph v1.0 documents this list
# at /policies/authenticationStrengthPolicies).
STRENGTHS_PATH = "graph/v1.0/policies/authenticationStrengthPolicies"
# Unified audit log retention durations, in days.
AUDIT_DURATIONS = {
    "SevenDays": 7,
    "OneMonth": 30,
    "ThreeMonths": 90,
    "SixMonths": 180,
    "NineMonths": 270,
    "TwelveMonths": 365,
    "ThreeYears": 1095,
    "FiveYears": 1825,
    "SevenYears": 2555,
    "TenYears": 3650,
}
# Secure score's enabledServices -> the service ids the BAA attestation lists.
_SERVICES = {
    "HasExchange": "exchange-online",
    "HasSharePoint": "sharepoint-online",
    "HasOD4B": "onedrive",
    "HasTeams": "teams",
}


@dataclass(frozen=True)
class M365Settings:
    """What the policies need from config: accounts that are deliberately left out."""

    break_glass: tuple[str, ...] = ()
    mfa_exceptions: tuple[str, ...] = ()
    # The directory roles judged as highly privileged (MS.AAD.7.x), by display name.
    privileged_roles: tuple[str, ...] = SCUBA_PRIVILEGED_ROLES
    # The Microsoft cloud ([m365] cloud): some features do not exist in every one.
    cloud: str = "global"


@dataclass
class SectionOut:
    name: str
    data: Any
    source: str
    raw: tuple[str, ...]
    status: str = "ok"
    reason: str | None = None


@dataclass
class _Reader:
    fetched: FetchedMap
    used: list[Fetched] = field(default_factory=list)
    # Facts several sections share (Conditional Access), worked out once a run.
    memo: dict[str, tuple[Any, list[Fetched]]] = field(default_factory=dict)
    join: RegistrationJoin | None = None  # the registration rows, joined as the pages came
    # How the answers checked against Microsoft's published schema compare (see shapes.py).
    checks: dict[str, ShapeCheck] = field(default_factory=dict)

    def get(self, path: str) -> Fetched:
        found = self.fetched.get(path)
        if found is None:
            raise _Missing(path, f"{path} was not collected")
        self.used.append(found)
        if not found.ok:
            reason = found.error or f"{path} answered {found.status}"
            if path in DEFENDER_CMDLETS:
                reason = with_defender_hint(found.status, reason)
            raise _Missing(path, reason, found.unlicensed)
        if path in shapes.CHECKED:
            check = self.checks.get(path)
            if check is None:
                check = self.checks[path] = shapes.check(path, found.data)
            if check.problem:
                raise UnreadableShape(f"{path.removeprefix('graph/')}: {check.problem}")
        return found

    def value(self, path: str) -> list[Any]:
        data = self.get(path).data
        # A collection's answer always carries its items (`value`): without it, unknown.
        items = data.get("value") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise UnreadableShape(f"{path}: the answer holds no list of items")
        return list(items)

    def body(self, path: str) -> Any:
        return self.get(path).data

    def optional(self, path: str) -> Any | None:
        found = self.fetched.get(path)
        if found is None or not found.ok:
            return None
        self.used.append(found)
        return found.data


class _NotApplicable(Exception):
    """The section does not apply to this tenant (a feature its cloud does not have): the
    controls that read it are `not_applicable`, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Missing(Exception):
    def __init__(self, path: str, reason: str, unlicensed: bool = False) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.unlicensed = unlicensed


# A JSON member name with an `@` in it (an OData annotation; `\u0040` is the same name): a
# string followed by a colon. One scan of an answer's bytes spares a walk of every object when
# none is there (mailboxes are a tenant's worth of objects; the admin API annotates only some
# answers). RE2: linear in the bytes, where `re` retries at every `@` of every address.
_ANNOTATED_KEY = re2.compile(rb'(?:@|\\u0040)(?:[^"\\]|\\.)*"\s*:')


def strip_annotations(value: Any) -> Any:
    """Drop OData `@` annotations (`@odata.type`, `Identity@data.type`), recursively."""
    # Scalars are returned as they are without a call: a tenant's mailboxes are millions of them.
    if isinstance(value, dict):
        return {
            k: strip_annotations(v) if isinstance(v, dict | list) else v
            for k, v in value.items()
            if "@" not in k
        }
    if isinstance(value, list):
        return [strip_annotations(v) if isinstance(v, dict | list) else v for v in value]
    return value


def _names(reader: _Reader) -> dict[str, str]:
    """Object id -> a name a person recognises (UPN, group or role name)."""
    names: dict[str, str] = {}
    for user in reader.value("graph/v1.0/users"):
        names[user["id"]] = user.get("userPrincipalName") or user["id"]
    roles = reader.optional("graph/v1.0/roleManagement/directory/roleDefinitions")
    for role in (roles or {}).get("value", []):
        names[role.get("templateId") or role["id"]] = role.get("displayName", role["id"])
    for path, found in reader.fetched.items():
        if path.startswith("graph/v1.0/groups/") and found.ok and isinstance(found.data, dict):
            names[found.data.get("id", path.rsplit("/", 1)[1])] = found.data.get("displayName", "")
    return names


def _break_glass_ids(reader: _Reader, settings: M365Settings) -> set[str]:
    wanted = {a.lower() for a in settings.break_glass}
    ids: set[str] = set()
    if not wanted:
        return ids
    for user in reader.value("graph/v1.0/users"):
        if user["id"].lower() in wanted or (user.get("userPrincipalName") or "").lower() in wanted:
            ids.add(user["id"])
    return ids


# Conditional Access from Graph beta: conditions reach beta first (authenticationFlows,
# insiderRiskLevels and agentIdRiskLevels did), and some stay there (deviceStates, times), so a
# policy v1.0 shows unconditioned may be narrowed by one v1.0 leaves out.
BETA_CA_PATH = "graph/beta/identity/conditionalAccess/policies"


def _ca(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    if "ca" in reader.memo:
        facts, used = reader.memo["ca"]
        reader.used.extend(used)
        return list(facts)
    start = len(reader.used)
    names = _names(reader)
    break_glass = _break_glass_ids(reader, settings)
    policies = reader.value("graph/v1.0/identity/conditionalAccess/policies")
    strengths = _strengths(reader, policies)
    beta = {str(p.get("id")): p for p in reader.value(BETA_CA_PATH) if isinstance(p, Mapping)}
    facts = []
    for policy in policies:
        fact = policy_facts(policy, break_glass, names, strengths)
        unseen = beta_only_limits(policy, beta.get(str(policy.get("id"))))
        fact["narrowed_by"] = fact["narrowed_by"] + unseen
        fact["scoped_by"] = fact["scoped_by"] + unseen
        facts.append(fact)
    reader.memo["ca"] = (facts, reader.used[start:])
    return facts


# Clouds without Conditional Access for agent identities (ScubaGear's AADConfig.rego reports
# MS.AAD.9.1 not applicable there "because the feature is not yet available", at 4d34e9a).
AGENT_CA_UNAVAILABLE = frozenset({"gcc-high", "dod"})


def _agent_ca(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    policies = reader.value(BETA_CA_PATH)
    facts = [agent_policy_facts(p) for p in policies if isinstance(p, Mapping)]
    # Not applicable only while no policy uses the agent conditions at all: once one does, the
    # feature has come to the cloud and the policies are judged (one that targets agents but
    # falls short fails, as anywhere).
    if settings.cloud in AGENT_CA_UNAVAILABLE and not any(
        f["agents"] or f["agent_risk_levels"] for f in facts
    ):
        raise _NotApplicable(
            f"Conditional Access for agent identities is not available in the {settings.cloud} "
            "cloud, and no policy of the tenant uses its conditions"
        )
    return facts


def _strengths(reader: _Reader, policies: list[Any]) -> dict[str, Mapping[str, Any]]:
    """The tenant's authentication strengths (built-in and custom) by id, read when a policy
    grants one: a strength is judged by the combinations the tenant's own list gives it."""
    if not any(
        isinstance((p.get("grantControls") or {}).get("authenticationStrength"), dict)
        for p in policies
    ):
        return {}
    listed = reader.optional(STRENGTHS_PATH)
    items = listed.get("value") if isinstance(listed, dict) else None
    return {str(s["id"]): s for s in items or [] if isinstance(s, dict) and "id" in s}


def _role_coverage(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    policies = _ca(reader, settings)
    assignments = reader.value("graph/v1.0/roleManagement/directory/roleAssignments")
    definitions = reader.value("graph/v1.0/roleManagement/directory/roleDefinitions")
    defined = {str(r.get("templateId") or r.get("id")) for r in definitions if isinstance(r, dict)}
    missing = [name for template, name in PRIVILEGED_TEMPLATES.items() if template not in defined]
    if missing:
        # Every tenant defines these built-in roles: a role left out of the answer would pass
        # the control unseen (its coverage is judged role by role).
        raise UnreadableShape(
            "roleDefinitions: built-in roles missing from the answer: " + ", ".join(missing)
        )
    out = []
    for role in definitions:
        template = role.get("templateId") or role["id"]
        applying = [
            {
                k: p[k]
                for k in (
                    "id",
                    "displayName",
                    "state",
                    "enforced",
                    "requires_mfa",
                    "phishing_resistant",
                    "unexpected_exclusions",
                    "scoped_by",
                )
            }
            for p in policies
            if p["all_applications"]
            and (p["all_users"] or template in p["include_roles"])
            and template not in p["exclude_roles"]
            and not p["blocks"]
        ]
        out.append(
            {
                "templateId": template,
                "displayName": role.get("displayName"),
                "isBuiltIn": role.get("isBuiltIn"),
                "assignments": sum(
                    1 for a in assignments if a.get("roleDefinitionId") in (role["id"], template)
                ),
                "applying_policies": applying,
            }
        )
    return out


USERS_PATH = "graph/v1.0/users"
REGISTRATIONS_PATH = "graph/v1.0/reports/authenticationMethods/userRegistrationDetails"
_NO_DETAIL: dict[str, Any] = {}


class RegistrationJoin:
    """The `m365.entra.user_registration` rows built as the users' and their registration
    details' pages arrive, while the next pages are on their way, instead of after the last:
    on a large tenant the join is a tenth of a second more on the end of the run. The rows are
    the ones `_registration` builds from the whole answers; on anything it does not expect (an
    item that is not an object, one without an id, an id seen twice) the join gives up and
    `_registration` builds them from the whole answers, as for a recorded tenant."""

    def __init__(self, settings: M365Settings) -> None:
        self._exceptions = {a.lower() for a in settings.mfa_exceptions}
        self._details: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        self._users = 0
        self._detail_count = 0
        self.rows: list[dict[str, Any]] = []
        self.broken = False

    def users(self, items: list[Any]) -> None:
        if self.broken:
            return
        try:
            for user in items:
                user_id = user["id"]
                detail = self._details.get(user_id)
                row = _registration_row(user, detail or _NO_DETAIL, self._exceptions)
                if detail is None:
                    self._waiting.setdefault(user_id, []).append((row, user.get("userType")))
                self.rows.append(row)
            self._users += len(items)
        except Exception:  # the whole answers will say what is wrong
            self.broken = True

    def details(self, items: list[Any]) -> None:
        if self.broken:
            return
        try:
            for detail in items:
                if not isinstance(detail, dict) or detail["id"] in self._details:
                    raise ValueError("not an object, or an id seen twice")
                detail_id = detail["id"]
                self._details[detail_id] = detail
                for row, user_type in self._waiting.pop(detail_id, ()):
                    row["userType"] = (user_type or detail.get("userType") or "").lower()
                    row["isMfaRegistered"] = detail.get("isMfaRegistered")
                    row["methodsRegistered"] = detail.get("methodsRegistered", [])
            self._detail_count += len(items)
        except Exception:
            self.broken = True

    def result(self, users: int, details: int) -> list[dict[str, Any]] | None:
        """The rows, if the join saw exactly the `users` users and `details` details that the
        whole answers hold; None otherwise."""
        if self.broken or self._users != users or self._detail_count != details:
            return None
        return self.rows


def _registration_row(
    user: dict[str, Any], detail: dict[str, Any], exceptions: set[str]
) -> dict[str, Any]:
    user_id = user["id"]
    upn = user.get("userPrincipalName") or ""
    return {
        "id": user_id,
        "userPrincipalName": upn,
        "userType": (user.get("userType") or detail.get("userType") or "").lower(),
        "accountEnabled": user.get("accountEnabled"),
        "isMfaRegistered": detail.get("isMfaRegistered"),
        "methodsRegistered": detail.get("methodsRegistered", []),
        "declared_exception": bool(exceptions)
        and (upn.lower() in exceptions or user_id.lower() in exceptions),
    }


def _registration(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    detail_items = reader.value(REGISTRATIONS_PATH)
    users = reader.value(USERS_PATH)
    if reader.join is not None:
        joined = reader.join.result(len(users), len(detail_items))
        if joined is not None:
            return joined
    details = {d["id"]: d for d in detail_items}
    exceptions = {a.lower() for a in settings.mfa_exceptions}
    row = _registration_row
    return [row(user, details.get(user["id"], _NO_DETAIL), exceptions) for user in users]


# Workloads of a DLP policy, and of a retention policy, with the parameters that scope each. A
# parameter of a workload's prefix that is not listed as neutral limits that workload whenever it
# holds a value (exceptions, senders, "shared by", adaptive scopes, and any newer one).
# Neutral: identity and version fields every object has, and on-premises locations (another
# workload). Names from the published Get-DlpCompliancePolicy object (ScubaGear's provider export
# sample) and the New-DlpCompliancePolicy / New-RetentionCompliancePolicy references.
_NEUTRAL = frozenset(
    {
        "ExchangeObjectId",
        "ExchangeVersion",
        "ExchangeOnPremisesLocation",
        "SharePointOnPremisesLocation",
        "SharePointOnPremisesLocationException",
    }
)
DLP_WORKLOADS = (
    Workload("exchange", "ExchangeLocation", ("Exchange", "ExceptIfExchange"), _NEUTRAL),
    Workload("sharepoint", "SharePointLocation", ("SharePoint", "ExceptIfSharePoint"), _NEUTRAL),
    Workload("onedrive", "OneDriveLocation", ("OneDrive", "ExceptIfOneDrive"), _NEUTRAL),
    Workload("teams", "TeamsLocation", ("Teams", "ExceptIfTeams"), _NEUTRAL),
)
RETENTION_WORKLOADS = (
    Workload("exchange", "ExchangeLocation", ("Exchange",), _NEUTRAL),
    Workload("sharepoint", "SharePointLocation", ("SharePoint",), _NEUTRAL),
    Workload("onedrive", "OneDriveLocation", ("OneDrive",), _NEUTRAL),
    Workload("teams_chat", "TeamsChatLocation", ("TeamsChat",), _NEUTRAL),
    Workload("teams_channel", "TeamsChannelLocation", ("TeamsChannel",), _NEUTRAL),
)
# Parameters that limit every workload of a policy: administrative units, generic location
# exclusions, adaptive scopes (a retention policy's show on output as DynamicScopeLocation).
DLP_POLICY_WIDE = ("PolicyRBACScopes", "LocationExclusions")
RETENTION_POLICY_WIDE = (
    "PolicyRBACScopes",
    "AdaptiveScopeLocation",
    "AdaptiveScopeLocationException",
    "DynamicScopeLocation",
    "DynamicScopeLocationException",
    "IsAdaptivePolicy",
)


def _with_rules(
    reader: _Reader, policies_path: str, rules_path: str, links: tuple[str, ...]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each compliance policy with its rules. A rule names its policy by name or by Guid,
    depending on the cmdlet (`ParentPolicyName` for DLP, `Policy` for retention)."""
    policies = _objects(reader, policies_path)
    rules = _objects(reader, rules_path)
    paired = []
    for policy in policies:
        names = {policy.get(k) for k in ("Name", "Identity", "Guid", "ExchangeObjectId")} - {None}
        paired.append((policy, [r for r in rules if any(r.get(link) in names for link in links)]))
    return paired


def _objects(reader: _Reader, path: str) -> list[dict[str, Any]]:
    """A cmdlet's answer: a list of objects, or an error naming the cmdlet. Worked out once a
    run (several sections read Get-Mailbox, which is a tenant's worth of objects)."""
    key = f"objects:{path}"
    if key not in reader.memo:
        found = reader.get(path)
        body = found.data or []
        if found.body is None or _ANNOTATED_KEY.search(found.body):
            body = strip_annotations(body)
        if not isinstance(body, list) or not set(map(type, body)) <= {dict}:
            raise UnreadableShape(f"{path.split('/', 1)[1]}: the answer is not a list of objects")
        reader.memo[key] = (body, [reader.fetched[path]])
        return body
    body, used = reader.memo[key]
    reader.used.extend(used)
    return list(body)


def _dlp_rule(rule: dict[str, Any]) -> dict[str, Any]:
    try:
        detects = sensitive_types(rule)
    except UnreadableShape as exc:
        raise UnreadableShape(f"Get-DlpComplianceRule: {exc}") from None
    try:
        limits = dlp_rule_limits(rule)
    except UnreadableShape as exc:
        raise UnreadableShape(f"Get-DlpComplianceRule: {exc}") from None
    mode = rule.get("Mode")
    return {
        "Name": rule.get("Name"),
        "Mode": mode,
        # A rule counts while it is known to be on and enforced (not being deleted, not
        # auditing only): a rule without Disabled is not known to be on.
        "enabled": rule.get("Disabled") is False and mode in (None, "Enforce"),
        "detects": detects,
        "limits": limits,
        # Blocking counts for everyone (All) or for people outside the organisation (PerUser);
        # PerAnonymousUser blocks only "Anyone" links, and a scope not known blocks nothing.
        "blocks": rule.get("BlockAccess") is True
        and rule.get("BlockAccessScope") in ("All", "PerUser"),
        "encrypts": bool(rule.get("EncryptRMSTemplate")),
        # Whom a policy tip or email tells about the match (NotifyUser: SiteAdmin, LastModifier,
        # Owner or addresses); empty or absent: no one.
        "notifies_users": isinstance(rule.get("NotifyUser"), list) and bool(rule["NotifyUser"]),
    }


def _dlp(reader: _Reader) -> list[dict[str, Any]]:
    out = []
    for policy, mine in _with_rules(
        reader,
        "compliance/Get-DlpCompliancePolicy",
        "compliance/Get-DlpComplianceRule",
        ("ParentPolicyName", "Policy"),
    ):
        covered, limits = location_facts(policy, DLP_WORKLOADS, DLP_POLICY_WIDE)
        out.append(
            {
                "Name": policy.get("Name"),
                "Mode": policy.get("Mode"),
                "Enabled": policy.get("Enabled"),
                "DistributionStatus": policy.get("DistributionStatus"),
                "locations": covered,
                "location_limits": {k: v for k, v in limits.items() if v},
                "rules": [_dlp_rule(r) for r in mine],
            }
        )
    return out


def _duration_days(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _retention(reader: _Reader) -> list[dict[str, Any]]:
    out = []
    for policy, mine in _with_rules(
        reader,
        "compliance/Get-RetentionCompliancePolicy",
        "compliance/Get-RetentionComplianceRule",
        ("Policy",),
    ):
        covered, limits = location_facts(policy, RETENTION_WORKLOADS, RETENTION_POLICY_WIDE)
        out.append(
            {
                "Name": policy.get("Name"),
                "Enabled": policy.get("Enabled"),
                "Mode": policy.get("Mode"),
                "DistributionStatus": policy.get("DistributionStatus"),
                "locations": covered,
                "location_limits": {k: v for k, v in limits.items() if v},
                "rules": [
                    {
                        "Name": r.get("Name"),
                        "action": r.get("RetentionComplianceAction"),
                        "unlimited": str(r.get("RetentionDuration", "")).lower() == "unlimited",
                        "duration_days": _duration_days(r.get("RetentionDuration")),
                    }
                    for r in mine
                ],
            }
        )
    return out


def _audit_retention(reader: _Reader) -> list[dict[str, Any]]:
    policies = _objects(reader, "compliance/Get-UnifiedAuditLogRetentionPolicy")
    return [
        {
            "Name": p.get("Name"),
            # Absent is unknown, not on: a policy not known to be enabled retains nothing.
            "Enabled": p.get("Enabled"),
            "Priority": p.get("Priority"),
            "RetentionDuration": p.get("RetentionDuration"),
            "duration_days": AUDIT_DURATIONS.get(str(p.get("RetentionDuration"))),
            "covers_all_records": not (
                p.get("RecordTypes") or p.get("Operations") or p.get("UserIds")
            ),
            "shortest_ahead_days": _shortest_ahead(p, policies),
        }
        for p in policies
    ]


def _shortest_ahead(policy: Mapping[str, Any], policies: list[dict[str, Any]]) -> int | None:
    """The shortest retention, in days, of the policies that take precedence over this one for
    the records they select (a lower Priority wins: "a policy with a value of 5 takes priority
    over a policy with a value of 10", Microsoft Purview's audit log retention policies page);
    None when none does. A policy not known to be off counts, a priority not known on either
    side counts as ahead, and a duration not known counts as none at all (0)."""
    mine = priority(policy)
    ahead = [
        AUDIT_DURATIONS.get(str(other.get("RetentionDuration")), 0)
        for other in policies
        if other is not policy
        and other.get("Enabled") is not False
        and (mine is None or (theirs := priority(other)) is None or theirs < mine)
    ]
    return min(ahead) if ahead else None


def _dkim_domains(reader: _Reader) -> list[dict[str, Any]]:
    configs = {
        str(c.get("Domain", "")).lower(): c
        for c in strip_annotations(reader.body("exo/Get-DkimSigningConfig") or [])
    }
    domains = _tenant_domains(reader)
    out = []
    for domain in domains:
        if not domain.get("isVerified") or "Email" not in (domain.get("supportedServices") or []):
            continue
        name = domain["id"]
        config = configs.get(name.lower())
        out.append(
            {
                "domain": name,
                "initial": bool(domain.get("isInitial"))
                or name.lower().endswith(".onmicrosoft.com"),
                "Enabled": config.get("Enabled") if config else None,
                "Status": config.get("Status") if config else None,
                "Selector1CNAME": config.get("Selector1CNAME") if config else None,
                "Selector2CNAME": config.get("Selector2CNAME") if config else None,
            }
        )
    return out


# Microsoft Graph's own service principal: its delegated permission classifications say which
# permissions users may consent to under the "low impact" consent policy.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# The other APIs whose delegated permissions reach user data, by application id: those
# ScubaGear reads classifications on (schemas/RiskyAppPermissions.json, "resources", @4d34e9a).
# Any permission of theirs classified low impact lets users consent to it on their own.
OTHER_APIS = {
    "00000002-0000-0ff1-ce00-000000000000": "Office 365 Exchange Online",
    "00000003-0000-0ff1-ce00-000000000000": "Office 365 SharePoint Online",
    "c5393580-f805-4401-95e8-94b7a6ef2fc2": "Office 365 Management APIs",
    "00000009-0000-0000-c000-000000000000": "Power BI Service",
    "00000007-0000-0000-c000-000000000000": "Dataverse",
    "475226c6-020e-4fb2-8a90-7a972cbfc1d4": "PowerApps Service",
    "7df0a125-d3be-4c96-aa54-591f83ff541c": "Microsoft Flow Service",
}


def classifications_path(app_id: str) -> str:
    return f"graph/v1.0/servicePrincipals(appId='{app_id}')/delegatedPermissionClassifications"


CLASSIFICATIONS_PATH = classifications_path(GRAPH_APP_ID)
OTHER_CLASSIFICATIONS = {classifications_path(a): name for a, name in OTHER_APIS.items()}
_SELF_CONSENT = "managepermissiongrantsforself."
_OWNER_CONSENT = "managepermissiongrantsforownedresource."
_LOW_IMPACT = "microsoft-user-default-low"


def _user_consent(reader: _Reader, _settings: M365Settings) -> dict[str, Any]:
    """What users may consent to on their own: the consent policies assigned to the default
    user role (ids lower-cased: tenants and docs spell the prefix differently), and, when the
    "low impact" policy is one of them, the permissions the tenant classifies as low impact."""
    policy = _single(reader, "graph/v1.0/policies/authorizationPolicy")
    permissions = policy.get("defaultUserRolePermissions")
    assigned = (
        permissions.get("permissionGrantPoliciesAssigned")
        if isinstance(permissions, dict)
        else None
    )
    if not isinstance(assigned, list):
        raise UnreadableShape(
            "policies/authorizationPolicy: defaultUserRolePermissions."
            "permissionGrantPoliciesAssigned is not a list"
        )
    own = [
        str(p)[len(_SELF_CONSENT) :].lower()
        for p in assigned
        if str(p).lower().startswith(_SELF_CONSENT)
    ]
    owners = [
        str(p)[len(_OWNER_CONSENT) :].lower()
        for p in assigned
        if str(p).lower().startswith(_OWNER_CONSENT)
    ]
    unknown = [
        str(p) for p in assigned if not str(p).lower().startswith((_SELF_CONSENT, _OWNER_CONSENT))
    ]
    low: list[str] = []
    others: list[str] = []
    if _LOW_IMPACT in own:
        low = _low_impact(reader, CLASSIFICATIONS_PATH)
        for path, name in OTHER_CLASSIFICATIONS.items():
            found = reader.fetched.get(path)
            if found is not None and found.status == 404:
                # No such service principal in the tenant (Graph's Request_ResourceNotFound):
                # nothing of that API to consent to.
                reader.used.append(found)
                continue
            others += [f"{name}: {p}" for p in _low_impact(reader, path)]
    return {
        "permissionGrantPoliciesAssigned": [str(p) for p in assigned],
        "self_consent_policies": own,
        "owner_consent_policies": owners,
        "other_consent_policies": unknown,
        "low_impact_permissions": sorted(low),
        "low_impact_other_apis": sorted(others),
    }


def _low_impact(reader: _Reader, path: str) -> list[str]:
    """The permissions one API's delegated permission classifications say are low impact."""
    low = []
    for item in reader.value(path):
        if not isinstance(item, dict):
            raise UnreadableShape("delegatedPermissionClassifications: an item is not an object")
        if str(item.get("classification", "")).lower() == "low":
            low.append(str(item.get("permissionName")))
    return low


def _single(reader: _Reader, path: str) -> dict[str, Any]:
    """A Graph singleton. v1.0 sends the object itself; some published examples wrap it in
    `value` (an object, or a one-item list as beta does): all three are read."""
    body = strip_annotations(reader.body(path))
    inner = body.get("value") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        body = inner
    elif isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
        body = inner[0]
    if not isinstance(body, dict):
        raise UnreadableShape(f"{path.removeprefix('graph/v1.0/')}: the answer is not an object")
    return body


def _mailbox_auditing(reader: _Reader, _settings: M365Settings) -> dict[str, Any]:
    """Whether mailbox actions are audited: the organisation's default, and the accounts that
    bypass it. While auditing is on by default, Microsoft ignores a mailbox's own AuditEnabled
    (Purview, "Manage mailbox auditing"); those mailboxes are listed, and marked as ignored."""
    org = _objects(reader, "exo/Get-OrganizationConfig")
    if len(org) != 1:
        raise UnreadableShape(f"Get-OrganizationConfig: {len(org)} objects where one was expected")
    disabled = org[0].get("AuditDisabled")
    bypass = _objects(reader, "exo/Get-MailboxAuditBypassAssociation")
    mailboxes = _objects(reader, "exo/Get-Mailbox")
    if mailboxes and not bypass:
        # The cmdlet lists every user and computer account: none at all, where mailboxes are,
        # is an answer that was not read whole, not a tenant where no one bypasses auditing.
        raise UnreadableShape(
            f"Get-MailboxAuditBypassAssociation listed no account, where Get-Mailbox listed "
            f"{len(mailboxes)} mailboxes"
        )
    return {
        "AuditDisabled": disabled,
        "accounts_checked_for_bypass": len(bypass),
        # An account whose AuditBypassEnabled is anything but false is counted as bypassing.
        "bypassed": [
            {"Identity": b.get("Identity"), "Name": b.get("Name")}
            for b in bypass
            if b.get("AuditBypassEnabled") is not False
        ],
        "mailboxes_audit_enabled_false": [
            m.get("Identity") or m.get("UserPrincipalName")
            for m in mailboxes
            if m.get("AuditEnabled") is False
        ],
        "mailbox_audit_enabled_ignored": disabled is False,
    }


def _vendors(reader: _Reader) -> list[dict[str, Any]]:
    services = {"entra-id"}
    scores = reader.optional("graph/v1.0/security/secureScores")
    for score in (scores or {}).get("value", [])[:1]:
        services |= {_SERVICES[s] for s in score.get("enabledServices", []) if s in _SERVICES}
    if any(p.startswith("exo/") and f.ok for p, f in reader.fetched.items()):
        services.add("exchange-online")
    if any(p.startswith("compliance/") and f.ok for p, f in reader.fetched.items()):
        services.add("purview")
    return [{"vendor": "microsoft", "name": "Microsoft", "services": sorted(services)}]


def _configurations(reader: _Reader, path: str) -> list[dict[str, Any]]:
    """A Teams admin API answer: every policy of one configuration type, as a list of objects.
    A bare object (one policy) or a `value` list is read too, as public clients of this API read
    it. No policy at all is an error, not a pass: every tenant has a Global one."""
    body = strip_annotations(reader.body(path))
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        body = body["value"]
    elif isinstance(body, dict) and "Identity" in body:
        body = [body]
    name = path.removeprefix("teams/")
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise UnreadableShape(f"{name}: the answer is not a list of policies")
    if not body:
        raise UnreadableShape(f"{name}: no policies in the answer, not even the Global one")
    return body


# "Domain=example.org", as the module shows an allowed domain.
_DOMAIN_ENTRY = re.compile(r"^\s*Domain\s*=\s*(\S+?)\s*$")
# .NET's namespaces, which a type name starts with (Microsoft.Rtc.Management...AllowList).
_TYPE_NAME = re.compile(r"^(?:Microsoft|System)\.[A-Z]")
# A DNS name of two labels or more: what a bare string must be to count as an allowed domain
# (a .NET type name, as PowerShell writes an object it did not expand, is dotted too).
_DOMAIN_NAME = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.I
)


def _allowed_domains(value: Any) -> dict[str, Any]:
    """What a federation configuration's AllowedDomains allows: the domains it lists, whether it
    is the "all known domains" setting, and whether every part of it was understood. Its shape
    varies with the client that read it (an object naming AllowAllKnownDomains, an AllowedDomain
    list of "Domain=…" entries or {"Domain": …} objects, a list of those, or nothing at all);
    a part of another shape leaves `understood` false, and the policies do not pass on it."""
    domains: list[str] = []
    facts = {"domains": domains, "all_known_domains": False, "understood": True}

    def walk(part: Any) -> None:
        if part is None:
            return
        if isinstance(part, str):
            match = _DOMAIN_ENTRY.match(part)
            name = match.group(1) if match else part.strip()
            if "AllowAllKnownDomains" in part:
                facts["all_known_domains"] = True
            elif _DOMAIN_NAME.match(name) and not _TYPE_NAME.match(name):
                domains.append(name)
            else:
                facts["understood"] = False
        elif isinstance(part, list):
            for item in part:
                walk(item)
        elif isinstance(part, dict):
            for key, inner in part.items():
                if key == "AllowAllKnownDomains":
                    facts["all_known_domains"] = True
                elif key in ("AllowedDomain", "AllowList", "Domains"):
                    walk(inner)
                elif key == "Domain" and isinstance(inner, str):
                    walk(f"Domain={inner}")
                else:
                    facts["understood"] = False
        else:
            facts["understood"] = False

    walk(value)
    return facts


def _federation(reader: _Reader, _settings: M365Settings) -> list[dict[str, Any]]:
    """Teams external access (Get-CsTenantFederationConfiguration): each configuration as it
    came, with `allowed_domains` (see `_allowed_domains`) worked out beside AllowedDomains."""
    path = "teams/Skype.Policy/configurations/TenantFederationSettings"
    return [
        {**config, "allowed_domains": _allowed_domains(config.get("AllowedDomains"))}
        for config in _configurations(reader, path)
    ]


def _teams(path: str) -> Callable[[_Reader, M365Settings], Any]:
    return lambda reader, _settings: _configurations(reader, f"teams/{path}")


def _threat_policies(
    family: Family, policies: str, rules: str, presets: str, built_in: str | None = None
) -> Callable[[_Reader, M365Settings], Any]:
    """A protection policy family's policies in force (threat_policies.py): the policies, their
    rules and the preset rules must all be read; the accepted domains, when they cannot be,
    only make a rule's RecipientDomainIs count as narrowing."""

    def build(reader: _Reader, _settings: M365Settings) -> Any:
        listed = reader.optional("exo/Get-AcceptedDomain")
        domains = accepted_domains(
            [d for d in strip_annotations(listed) if isinstance(d, dict)]
            if isinstance(listed, list)
            else None
        )
        return in_force(
            family,
            _objects(reader, f"exo/{policies}"),
            _objects(reader, f"exo/{rules}"),
            _objects(reader, f"exo/{presets}"),
            domains,
            _objects(reader, f"exo/{built_in}") if built_in else None,
        )

    return build


def _transport_rules(reader: _Reader, _settings: M365Settings) -> list[dict[str, Any]]:
    rules = _objects(reader, "exo/Get-TransportRule")
    return transport_rules(rules, reader.get("exo/Get-TransportRule").collected_at)


# The SharePoint admin API's Tenant properties the controls read (names as /_api/SPO.Tenant
# sends them; Get-SPOTenant calls ODBSharingCapability OneDriveSharingCapability).
SPO_TENANT_PATH = "sharepoint/SPO.Tenant"
SPO_TENANT_PROPERTIES = (
    "SharingCapability",
    "ODBSharingCapability",
    "DefaultSharingLinkType",
    "DefaultLinkPermission",
    "RequireAnonymousLinksExpireInDays",
    "FileAnonymousLinkType",
    "FolderAnonymousLinkType",
    "EmailAttestationRequired",
    "EmailAttestationReAuthDays",
)


def _spo_tenant(reader: _Reader, _settings: M365Settings) -> dict[str, Any]:
    """The Tenant object's sharing properties. The verbose OData answer wraps them in `d`
    (ScubaGear's sample export); a plainer one sends them bare: both are read. A property the
    answer lacks is left out, so a control that needs it cannot pass."""
    body = reader.body(SPO_TENANT_PATH)
    tenant = body.get("d", body) if isinstance(body, dict) else None
    if not isinstance(tenant, dict):
        raise UnreadableShape("SPO.Tenant: the answer is not an object")
    found = {name: tenant[name] for name in SPO_TENANT_PROPERTIES if name in tenant}
    if not found:
        raise UnreadableShape("SPO.Tenant: the answer holds none of the Tenant's sharing settings")
    return found


def _cmdlet(path: str) -> Callable[[_Reader, M365Settings], Any]:
    return lambda reader, _settings: _objects(reader, path)


def _body(path: str) -> Callable[[_Reader, M365Settings], Any]:
    """A Graph singleton's object (see `_single`)."""
    return lambda reader, _settings: _single(reader, path)


def _tenant_domains(reader: _Reader) -> Any:
    domains = strip_annotations(reader.value("graph/v1.0/domains"))
    if not domains:
        # Every tenant has its initial (*.onmicrosoft.com) domain at least: an empty list is
        # not the tenant's, and would leave no domain to fail.
        raise UnreadableShape("domains: the answer lists no domain")
    return domains


ROLE_DEFINITIONS_PATH = "graph/v1.0/roleManagement/directory/roleDefinitions"
ELIGIBLE_PATH = "graph/v1.0/roleManagement/directory/roleEligibilityScheduleInstances"
ACTIVE_PATH = "graph/v1.0/roleManagement/directory/roleAssignmentScheduleInstances"
ROLE_POLICIES_PATH = "graph/v1.0/policies/roleManagementPolicyAssignments"


def privileged_user_ids(
    definitions: Fetched, instances: list[Fetched], settings: M365Settings
) -> list[str]:
    """The users whose accounts the connector looks up (see privileged.privileged_user_ids)."""
    if not definitions.ok:
        return []
    answers = [f.data for f in instances if f.ok]
    return _user_ids(definitions.data, answers, settings.privileged_roles)


def _privileged_roles(reader: _Reader, settings: M365Settings) -> dict[str, Any]:
    if "privileged" in reader.memo:
        facts, used = reader.memo["privileged"]
        reader.used.extend(used)
        return dict(facts)
    start = len(reader.used)
    definitions = reader.body(ROLE_DEFINITIONS_PATH)
    eligible = reader.body(ELIGIBLE_PATH)
    active = reader.body(ACTIVE_PATH)
    ids = _user_ids(definitions, [eligible, active], settings.privileged_roles)
    # A user whose account could not be read is listed without it (not cloud-only).
    users = {i: reader.optional(f"graph/v1.0/users/{i}") for i in ids}
    facts = privileged_roles(
        definitions, eligible, active, users, settings.privileged_roles, settings.break_glass
    )
    reader.memo["privileged"] = (facts, reader.used[start:])
    return facts


def _role_management_policies(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    holders = _privileged_roles(reader, settings)
    assignments = strip_annotations(reader.body(ROLE_POLICIES_PATH))
    definitions = reader.body(ROLE_DEFINITIONS_PATH)
    return role_management_policies(definitions, assignments, settings.privileged_roles, holders)


def _app_management(reader: _Reader, _settings: M365Settings) -> dict[str, Any]:
    default = _single(reader, "graph/v1.0/policies/defaultAppManagementPolicy")
    custom = strip_annotations(reader.value("graph/v1.0/policies/appManagementPolicies"))
    return app_management(default, custom)


# Section name -> how to build it.
SECTIONS: dict[str, Callable[[_Reader, M365Settings], Any]] = {
    "m365.vendors": lambda r, _s: _vendors(r),
    "m365.entra.conditional_access": _ca,
    "m365.entra.agent_conditional_access": _agent_ca,
    "m365.entra.security_defaults": _body(
        "graph/v1.0/policies/identitySecurityDefaultsEnforcementPolicy"
    ),
    "m365.entra.role_coverage": _role_coverage,
    "m365.entra.user_registration": _registration,
    "m365.entra.authorization_policy": _body("graph/v1.0/policies/authorizationPolicy"),
    "m365.entra.admin_consent_request_policy": _body(
        "graph/v1.0/policies/adminConsentRequestPolicy"
    ),
    "m365.entra.user_consent": _user_consent,
    "m365.entra.authentication_methods_policy": _body(
        "graph/v1.0/policies/authenticationMethodsPolicy"
    ),
    "m365.entra.domains": lambda r, _s: _tenant_domains(r),
    "m365.entra.secure_score": lambda r, _s: strip_annotations(
        r.value("graph/v1.0/security/secureScores")[:1]
    ),
    "m365.entra.app_management_policy": _app_management,
    "m365.entra.privileged_roles": _privileged_roles,
    "m365.entra.role_management_policies": _role_management_policies,
    "m365.sharepoint.settings": _body("graph/v1.0/admin/sharepoint/settings"),
    "m365.sharepoint.tenant": _spo_tenant,
    "m365.exo.transport_config": _cmdlet("exo/Get-TransportConfig"),
    "m365.exo.organization_config": _cmdlet("exo/Get-OrganizationConfig"),
    "m365.exo.admin_audit_log_config": _cmdlet("exo/Get-AdminAuditLogConfig"),
    "m365.exo.inbound_connectors": _cmdlet("exo/Get-InboundConnector"),
    "m365.exo.outbound_connectors": _cmdlet("exo/Get-OutboundConnector"),
    "m365.exo.remote_domains": _cmdlet("exo/Get-RemoteDomain"),
    "m365.exo.outbound_spam_policies": _cmdlet("exo/Get-HostedOutboundSpamFilterPolicy"),
    "m365.exo.dkim_domains": lambda r, _s: _dkim_domains(r),
    "m365.exo.irm_configuration": _cmdlet("exo/Get-IRMConfiguration"),
    "m365.exo.owa_mailbox_policies": _cmdlet("exo/Get-OwaMailboxPolicy"),
    "m365.exo.mailboxes": _cmdlet("exo/Get-Mailbox"),
    "m365.exo.mailbox_auditing": _mailbox_auditing,
    "m365.exo.accepted_domains": _cmdlet("exo/Get-AcceptedDomain"),
    "m365.exo.sharing_policies": _cmdlet("exo/Get-SharingPolicy"),
    "m365.exo.connection_filter_policies": _cmdlet("exo/Get-HostedConnectionFilterPolicy"),
    "m365.exo.malware_filter_policies": _threat_policies(
        MALWARE, "Get-MalwareFilterPolicy", "Get-MalwareFilterRule", "Get-EOPProtectionPolicyRule"
    ),
    "m365.exo.content_filter_policies": _threat_policies(
        CONTENT_FILTER,
        "Get-HostedContentFilterPolicy",
        "Get-HostedContentFilterRule",
        "Get-EOPProtectionPolicyRule",
    ),
    "m365.exo.anti_phish_policies": _threat_policies(
        ANTI_PHISH, "Get-AntiPhishPolicy", "Get-AntiPhishRule", "Get-EOPProtectionPolicyRule"
    ),
    "m365.exo.safe_links_policies": _threat_policies(
        SAFE_LINKS,
        "Get-SafeLinksPolicy",
        "Get-SafeLinksRule",
        "Get-ATPProtectionPolicyRule",
        "Get-ATPBuiltInProtectionRule",
    ),
    "m365.exo.safe_attachment_policies": _threat_policies(
        SAFE_ATTACHMENTS,
        "Get-SafeAttachmentPolicy",
        "Get-SafeAttachmentRule",
        "Get-ATPProtectionPolicyRule",
        "Get-ATPBuiltInProtectionRule",
    ),
    "m365.exo.atp_policy": _cmdlet("exo/Get-AtpPolicyForO365"),
    "m365.exo.transport_rules": _transport_rules,
    "m365.purview.protection_alerts": _cmdlet("compliance/Get-ProtectionAlert"),
    "m365.purview.dlp": lambda r, _s: _dlp(r),
    "m365.purview.retention": lambda r, _s: _retention(r),
    "m365.purview.audit_retention": lambda r, _s: _audit_retention(r),
    "m365.teams.meeting_policies": _teams("Skype.Policy/configurations/TeamsMeetingPolicy"),
    "m365.teams.broadcast_policies": _teams(
        "Skype.Policy/configurations/TeamsMeetingBroadcastPolicy"
    ),
    "m365.teams.federation_configuration": _federation,
    "m365.teams.client_configuration": _teams(
        "Skype.Policy/configurations/TeamsClientConfiguration"
    ),
    "m365.teams.app_permission_policies": _teams(
        "Skype.Policy/configurations/TeamsAppPermissionPolicy"
    ),
}


_GRAPH = "graph/v1.0/"
_CA_READS = (
    CA_POLICIES,
    BETA_CA_PATH,  # the conditions Graph v1.0 does not show yet
    _GRAPH + "groups/*",  # the groups the policies exclude, looked up as part of that read
    STRENGTHS_PATH,
    ROLE_DEFINITIONS_PATH,
    _GRAPH + "users",
)
_PIM_READS = (ROLE_DEFINITIONS_PATH, ELIGIBLE_PATH, ACTIVE_PATH, _GRAPH + "users/*")
_ACCEPTED = "exo/Get-AcceptedDomain"
_EOP_RULES = "exo/Get-EOPProtectionPolicyRule"
_ATP_RULES = ("exo/Get-ATPProtectionPolicyRule", "exo/Get-ATPBuiltInProtectionRule")

# Section name -> every answer its builder may read (a superset: some reads depend on what an
# earlier answer said). A run that needs only some sections reads only their answers; tests
# check each builder reads nothing beyond its entry (`users/*`: one user each).
SECTION_READS: dict[str, tuple[str, ...]] = {
    # The services in use: secure score's list, and whether the admin APIs answered at all.
    "m365.vendors": (
        _GRAPH + "security/secureScores",
        "exo/Get-OrganizationConfig",
        "compliance/Get-UnifiedAuditLogRetentionPolicy",
    ),
    "m365.entra.conditional_access": _CA_READS,
    "m365.entra.agent_conditional_access": (BETA_CA_PATH,),
    "m365.entra.security_defaults": (
        _GRAPH + "policies/identitySecurityDefaultsEnforcementPolicy",
    ),
    "m365.entra.role_coverage": (*_CA_READS, _GRAPH + "roleManagement/directory/roleAssignments"),
    "m365.entra.user_registration": (
        _GRAPH + "reports/authenticationMethods/userRegistrationDetails",
        _GRAPH + "users",
    ),
    "m365.entra.authorization_policy": (_GRAPH + "policies/authorizationPolicy",),
    "m365.entra.admin_consent_request_policy": (_GRAPH + "policies/adminConsentRequestPolicy",),
    "m365.entra.user_consent": (
        _GRAPH + "policies/authorizationPolicy",
        CLASSIFICATIONS_PATH,
        *OTHER_CLASSIFICATIONS,
    ),
    "m365.entra.authentication_methods_policy": (_GRAPH + "policies/authenticationMethodsPolicy",),
    "m365.entra.domains": (_GRAPH + "domains",),
    "m365.entra.secure_score": (_GRAPH + "security/secureScores",),
    "m365.entra.app_management_policy": (
        _GRAPH + "policies/defaultAppManagementPolicy",
        _GRAPH + "policies/appManagementPolicies",
    ),
    "m365.entra.privileged_roles": _PIM_READS,
    "m365.entra.role_management_policies": (*_PIM_READS, ROLE_POLICIES_PATH),
    "m365.sharepoint.settings": (_GRAPH + "admin/sharepoint/settings",),
    "m365.sharepoint.tenant": (SPO_TENANT_PATH,),
    "m365.exo.transport_config": ("exo/Get-TransportConfig",),
    "m365.exo.organization_config": ("exo/Get-OrganizationConfig",),
    "m365.exo.admin_audit_log_config": ("exo/Get-AdminAuditLogConfig",),
    "m365.exo.inbound_connectors": ("exo/Get-InboundConnector",),
    "m365.exo.outbound_connectors": ("exo/Get-OutboundConnector",),
    "m365.exo.remote_domains": ("exo/Get-RemoteDomain",),
    "m365.exo.outbound_spam_policies": ("exo/Get-HostedOutboundSpamFilterPolicy",),
    "m365.exo.dkim_domains": ("exo/Get-DkimSigningConfig", _GRAPH + "domains"),
    "m365.exo.irm_configuration": ("exo/Get-IRMConfiguration",),
    "m365.exo.owa_mailbox_policies": ("exo/Get-OwaMailboxPolicy",),
    "m365.exo.mailboxes": ("exo/Get-Mailbox",),
    "m365.exo.mailbox_auditing": (
        "exo/Get-Mailbox",
        "exo/Get-MailboxAuditBypassAssociation",
        "exo/Get-OrganizationConfig",
    ),
    "m365.exo.accepted_domains": (_ACCEPTED,),
    "m365.exo.sharing_policies": ("exo/Get-SharingPolicy",),
    "m365.exo.connection_filter_policies": ("exo/Get-HostedConnectionFilterPolicy",),
    "m365.exo.malware_filter_policies": (
        "exo/Get-MalwareFilterPolicy",
        "exo/Get-MalwareFilterRule",
        _EOP_RULES,
        _ACCEPTED,
    ),
    "m365.exo.content_filter_policies": (
        "exo/Get-HostedContentFilterPolicy",
        "exo/Get-HostedContentFilterRule",
        _EOP_RULES,
        _ACCEPTED,
    ),
    "m365.exo.anti_phish_policies": (
        "exo/Get-AntiPhishPolicy",
        "exo/Get-AntiPhishRule",
        _EOP_RULES,
        _ACCEPTED,
    ),
    "m365.exo.safe_links_policies": (
        "exo/Get-SafeLinksPolicy",
        "exo/Get-SafeLinksRule",
        *_ATP_RULES,
        _ACCEPTED,
    ),
    "m365.exo.safe_attachment_policies": (
        "exo/Get-SafeAttachmentPolicy",
        "exo/Get-SafeAttachmentRule",
        *_ATP_RULES,
        _ACCEPTED,
    ),
    "m365.exo.atp_policy": ("exo/Get-AtpPolicyForO365",),
    "m365.exo.transport_rules": ("exo/Get-TransportRule",),
    "m365.purview.protection_alerts": ("compliance/Get-ProtectionAlert",),
    "m365.purview.dlp": ("compliance/Get-DlpCompliancePolicy", "compliance/Get-DlpComplianceRule"),
    "m365.purview.retention": (
        "compliance/Get-RetentionCompliancePolicy",
        "compliance/Get-RetentionComplianceRule",
    ),
    "m365.purview.audit_retention": ("compliance/Get-UnifiedAuditLogRetentionPolicy",),
    **{
        name: (f"teams/Skype.Policy/configurations/{configuration}",)
        for name, configuration in (
            ("m365.teams.meeting_policies", "TeamsMeetingPolicy"),
            ("m365.teams.broadcast_policies", "TeamsMeetingBroadcastPolicy"),
            ("m365.teams.federation_configuration", "TenantFederationSettings"),
            ("m365.teams.client_configuration", "TeamsClientConfiguration"),
            ("m365.teams.app_permission_policies", "TeamsAppPermissionPolicy"),
        )
    },
}


def reads_for(sections: Iterable[str] | None) -> frozenset[str] | None:
    """The answers these sections may read; None (every answer) when `sections` is None."""
    if sections is None:
        return None
    return frozenset(path for name in sections for path in SECTION_READS.get(name, ()))


# Sections built from Exchange, Security & Compliance and Teams answers alone: they can be
# worked out while the (longer) Graph reads are still running.
ADMIN_API_SECTIONS = frozenset(
    name
    for name in SECTIONS
    if name.startswith(("m365.exo.", "m365.purview.", "m365.teams."))
    and name != "m365.exo.dkim_domains"
)


def normalise(
    fetched: FetchedMap,
    settings: M365Settings,
    only: frozenset[str] | None = None,
    join: RegistrationJoin | None = None,
) -> list[SectionOut]:
    """Every `m365.*` section (or those named in `only`); one whose answers are missing is an
    error with the reason (naming the missing permission or licence where that is the cause).
    `join`, when given, holds the registration rows joined while the pages arrived."""
    out = []
    memo: dict[str, tuple[Any, list[Fetched]]] = {}
    checks: dict[str, ShapeCheck] = {}
    for name, build in SECTIONS.items():
        if only is not None and name not in only:
            continue
        reader = _Reader(fetched, memo=memo, join=join, checks=checks)
        try:
            data = build(reader, settings)
        except _Missing as missing:
            source = _source_of(reader.used) or _source_for_path(missing.path)
            out.append(SectionOut(name, None, source, _raws(reader.used), "error", missing.reason))
            continue
        except _NotApplicable as why:
            out.append(
                SectionOut(
                    name,
                    None,
                    _source_of(reader.used),
                    _raws(reader.used),
                    "not_applicable",
                    why.reason,
                )
            )
            continue
        except Exception as exc:  # one odd answer costs its own section, no more
            out.append(_unreadable(name, reader, exc))
            continue
        out.append(SectionOut(name, data, _source_of(reader.used), _raws(reader.used)))
    return out


def _unreadable(name: str, reader: _Reader, exc: Exception) -> SectionOut:
    """A section whose answers have a shape this code does not understand: `error`, naming what
    was being read, so the controls that need it (and only those) cannot pass."""
    source = _source_of(reader.used) or name
    what = str(exc) if isinstance(exc, UnreadableShape) else f"{type(exc).__name__}: {exc}"
    reason = (
        f"could not read {source}: {what}. The answer has a shape commsaudit does not "
        "understand; a pseudonymised recording (commsaudit record --pseudonymise) helps us "
        "support it"
    )
    return SectionOut(name, None, source, _raws(reader.used), "error", reason)


def _source_of(used: Iterable[Fetched]) -> str:
    return " + ".join(dict.fromkeys(f.source for f in used))


def _raws(used: Iterable[Fetched]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.raw_path for f in used if f.ok))


def _source_for_path(path: str) -> str:
    kind, _, rest = path.partition("/")
    if kind == "sharepoint":
        return f"sharepoint:GET /_api/{rest}"
    return f"graph:GET /{rest}" if kind == "graph" else f"{kind}:{rest}"
