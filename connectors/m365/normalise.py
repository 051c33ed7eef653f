"""Recorded Graph and Exchange answers -> the `m365.*` snapshot sections.

Sections keep the platform's own names and shapes wherever a policy can read them as they are
(the Exchange cmdlet sections are the cmdlet output). Where a fact only exists across several
answers (which Conditional Access policies apply to a role, which mail domains lack DKIM, what a
DLP rule detects) it is worked out here, as a neutral fact; what is *required* of those facts is
the policies' business, never this module's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.m365.fetched import Fetched, FetchedMap

# Authentication methods that resist phishing (the built-in "Phishing-resistant MFA" strength).
PHISHING_RESISTANT = {"windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"}
# Conditions that narrow a Conditional Access policy to some sign-ins only.
_NARROWING = (
    "userRiskLevels",
    "signInRiskLevels",
    "servicePrincipalRiskLevels",
    "platforms",
    "locations",
    "devices",
    "clientApplications",
    "times",
    "deviceStates",
)
# Unified audit log retention durations, in days.
AUDIT_DURATIONS = {
    "SevenDays": 7,
    "OneMonth": 30,
    "ThreeMonths": 90,
    "SixMonths": 180,
    "NineMonths": 270,
    "TwelveMonths": 365,
    "OneYear": 365,
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

    def get(self, path: str) -> Fetched:
        found = self.fetched.get(path)
        if found is None:
            raise _Missing(path, f"{path} was not collected")
        self.used.append(found)
        if not found.ok:
            raise _Missing(path, found.error or f"{path} answered {found.status}", found.unlicensed)
        return found

    def value(self, path: str) -> list[Any]:
        data = self.get(path).data
        return list(data.get("value", [])) if isinstance(data, dict) else list(data or [])

    def body(self, path: str) -> Any:
        return self.get(path).data

    def optional(self, path: str) -> Any | None:
        found = self.fetched.get(path)
        if found is None or not found.ok:
            return None
        self.used.append(found)
        return found.data


class _Missing(Exception):
    def __init__(self, path: str, reason: str, unlicensed: bool = False) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.unlicensed = unlicensed


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


def conditional_access_policy(
    policy: dict[str, Any], break_glass: set[str], names: dict[str, str]
) -> dict[str, Any]:
    """One Conditional Access policy as facts: whom and what it covers, what it grants, and every
    exclusion that is not a declared break-glass account."""
    conditions = policy.get("conditions") or {}
    users = conditions.get("users") or {}
    apps = conditions.get("applications") or {}
    grant = policy.get("grantControls") or {}
    builtin = list(grant.get("builtInControls") or [])
    strength = grant.get("authenticationStrength")
    controls = [c for c in builtin if c != "block"] + (
        ["authenticationStrength"] if strength else []
    )
    # With OR, "mfa or a compliant device" lets a sign-in through without MFA.
    requires_mfa = bool("mfa" in builtin or strength) and (
        (grant.get("operator") or "OR").upper() == "AND" or len(controls) == 1
    )
    strength_facts = None
    if strength:
        combinations = set(strength.get("allowedCombinations") or [])
        strength_facts = {
            "id": strength.get("id"),
            "displayName": strength.get("displayName"),
            "allowedCombinations": sorted(combinations),
            "phishing_resistant": bool(combinations) and combinations <= PHISHING_RESISTANT,
        }
    exclusions: list[dict[str, Any]] = []
    break_glass_excluded: list[dict[str, Any]] = []
    for user_id in users.get("excludeUsers") or []:
        entry = {"kind": "user", "id": user_id, "name": names.get(user_id, user_id)}
        (break_glass_excluded if user_id in break_glass else exclusions).append(entry)
    for kind, key in (("group", "excludeGroups"), ("role", "excludeRoles")):
        for object_id in users.get(key) or []:
            exclusions.append(
                {"kind": kind, "id": object_id, "name": names.get(object_id, object_id)}
            )
    guests = users.get("excludeGuestsOrExternalUsers")
    if guests:
        exclusions.append(
            {
                "kind": "guests",
                "id": None,
                "name": guests.get("guestOrExternalUserTypes", "guests or external users"),
            }
        )
    for app in apps.get("excludeApplications") or []:
        exclusions.append({"kind": "application", "id": app, "name": app})
    client_apps = list(conditions.get("clientAppTypes") or ["all"])
    scoped_by = [c for c in _NARROWING if conditions.get(c)]
    if client_apps != ["all"]:
        scoped_by.append("clientAppTypes")
    return {
        "id": policy.get("id"),
        "displayName": policy.get("displayName"),
        "state": policy.get("state"),
        "enforced": policy.get("state") == "enabled",
        "all_users": "All" in (users.get("includeUsers") or []),
        "all_applications": "All" in (apps.get("includeApplications") or []),
        "include_roles": list(users.get("includeRoles") or []),
        "exclude_roles": list(users.get("excludeRoles") or []),
        "client_app_types": client_apps,
        "scoped_by": scoped_by,
        "grant_operator": grant.get("operator"),
        "grant_controls": builtin,
        "requires_mfa": requires_mfa,
        "blocks": "block" in builtin,
        "authentication_strength": strength_facts,
        "phishing_resistant": bool(strength_facts and strength_facts["phishing_resistant"]),
        "unexpected_exclusions": exclusions,
        "break_glass_exclusions": break_glass_excluded,
    }


def _ca(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    if "ca" in reader.memo:
        facts, used = reader.memo["ca"]
        reader.used.extend(used)
        return list(facts)
    start = len(reader.used)
    names = _names(reader)
    break_glass = _break_glass_ids(reader, settings)
    policies = reader.value("graph/v1.0/identity/conditionalAccess/policies")
    facts = [conditional_access_policy(p, break_glass, names) for p in policies]
    reader.memo["ca"] = (facts, reader.used[start:])
    return facts


def _role_coverage(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    policies = _ca(reader, settings)
    assignments = reader.value("graph/v1.0/roleManagement/directory/roleAssignments")
    out = []
    for role in reader.value("graph/v1.0/roleManagement/directory/roleDefinitions"):
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


def _registration(reader: _Reader, settings: M365Settings) -> list[dict[str, Any]]:
    details = {
        d["id"]: d
        for d in reader.value("graph/v1.0/reports/authenticationMethods/userRegistrationDetails")
    }
    exceptions = {a.lower() for a in settings.mfa_exceptions}
    none: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    append = out.append  # a tenant's worth of users: keep the loop lean
    for user in reader.value("graph/v1.0/users"):
        user_id = user["id"]
        detail = details.get(user_id, none)
        upn = user.get("userPrincipalName") or ""
        append(
            {
                "id": user_id,
                "userPrincipalName": upn,
                "userType": (user.get("userType") or detail.get("userType") or "").lower(),
                "accountEnabled": user.get("accountEnabled"),
                "isMfaRegistered": detail.get("isMfaRegistered"),
                "methodsRegistered": detail.get("methodsRegistered", []),
                "declared_exception": bool(exceptions)
                and (upn.lower() in exceptions or user_id.lower() in exceptions),
            }
        )
    return out


def _locations(policy: dict[str, Any], key: str) -> bool:
    """Whether a location property covers everything: `All`, as a string or a location object."""
    value = policy.get(key)
    items = value if isinstance(value, list) else [value] if value else []
    for item in items:
        name = (
            item
            if isinstance(item, str)
            else (item or {}).get("Name") or (item or {}).get("DisplayName")
        )
        if isinstance(name, str) and name.lower() == "all":
            return True
    return False


def _sensitive_types(rule: dict[str, Any]) -> list[str]:
    """Names of the sensitive information types a DLP rule detects, from the classic parameter
    or from the AdvancedRule JSON of newer rules."""
    found: list[str] = []
    for entry in rule.get("ContentContainsSensitiveInformation") or []:
        # Over REST each type is a list of {"_key": ..., "_value": ...} pairs; through the
        # PowerShell module it is a hashtable. Both are read.
        if isinstance(entry, list):
            entry = {
                pair.get("_key"): pair.get("_value") for pair in entry if isinstance(pair, dict)
            }
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.lower() == "name" and isinstance(value, str):
                    found.append(value)
                elif key.lower() == "groups" and isinstance(value, list):
                    for group in value:
                        for sit in (group or {}).get("sensitivetypes", []) or []:
                            if isinstance(sit, dict) and isinstance(sit.get("name"), str):
                                found.append(sit["name"])
    advanced = rule.get("AdvancedRule")
    if isinstance(advanced, str) and advanced.strip():
        try:
            tree = json.loads(advanced)
        except json.JSONDecodeError:
            tree = None
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("ConditionName") == "ContentContainsSensitiveInformation":
                    stack.append(node.get("Value"))
                name = node.get("name") or node.get("Name")
                if isinstance(name, str) and (
                    "mincount" in {k.lower() for k in node} or "id" in node
                ):
                    found.append(name)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return sorted(set(found))


def _with_rules(
    reader: _Reader, policies_path: str, rules_path: str, links: tuple[str, ...]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each compliance policy with its rules. A rule names its policy by name or by Guid,
    depending on the cmdlet (`ParentPolicyName` for DLP, `Policy` for retention)."""
    policies = strip_annotations(reader.body(policies_path) or [])
    rules = strip_annotations(reader.body(rules_path) or [])
    paired = []
    for policy in policies:
        names = {policy.get(k) for k in ("Name", "Identity", "Guid", "ExchangeObjectId")} - {None}
        paired.append((policy, [r for r in rules if any(r.get(link) in names for link in links)]))
    return paired


def _dlp(reader: _Reader) -> list[dict[str, Any]]:
    out = []
    for policy, mine in _with_rules(
        reader,
        "compliance/Get-DlpCompliancePolicy",
        "compliance/Get-DlpComplianceRule",
        ("ParentPolicyName", "Policy"),
    ):
        out.append(
            {
                "Name": policy.get("Name"),
                "Mode": policy.get("Mode"),
                "Enabled": policy.get("Enabled"),
                "locations": {
                    "exchange_all": _locations(policy, "ExchangeLocation"),
                    "sharepoint_all": _locations(policy, "SharePointLocation"),
                    "onedrive_all": _locations(policy, "OneDriveLocation"),
                    "teams_all": _locations(policy, "TeamsLocation"),
                },
                "rules": [
                    {
                        "Name": r.get("Name"),
                        "enabled": not r.get("Disabled", False),
                        "detects": _sensitive_types(r),
                        "blocks": bool(r.get("BlockAccess")),
                        "encrypts": bool(
                            r.get("EncryptRMSTemplate") or r.get("ApplyRightsProtection")
                        ),
                    }
                    for r in mine
                ],
            }
        )
    return out


def _duration_days(value: Any) -> int | None:
    if isinstance(value, int):
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
        out.append(
            {
                "Name": policy.get("Name"),
                "Enabled": policy.get("Enabled"),
                "Mode": policy.get("Mode"),
                "locations": {
                    "exchange_all": _locations(policy, "ExchangeLocation"),
                    "sharepoint_all": _locations(policy, "SharePointLocation"),
                    "onedrive_all": _locations(policy, "OneDriveLocation"),
                    "teams_chat_all": _locations(policy, "TeamsChatLocation"),
                    "teams_channel_all": _locations(policy, "TeamsChannelLocation"),
                },
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
    policies = strip_annotations(reader.body("compliance/Get-UnifiedAuditLogRetentionPolicy") or [])
    return [
        {
            "Name": p.get("Name"),
            "Enabled": p.get("Enabled", True),
            "Priority": p.get("Priority"),
            "RetentionDuration": p.get("RetentionDuration"),
            "duration_days": AUDIT_DURATIONS.get(str(p.get("RetentionDuration"))),
            "covers_all_records": not (
                p.get("RecordTypes") or p.get("Operations") or p.get("UserIds")
            ),
        }
        for p in policies
    ]


def _dkim_domains(reader: _Reader) -> list[dict[str, Any]]:
    configs = {
        str(c.get("Domain", "")).lower(): c
        for c in strip_annotations(reader.body("exo/Get-DkimSigningConfig") or [])
    }
    out = []
    for domain in reader.value("graph/v1.0/domains"):
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


def _cmdlet(path: str) -> Callable[[_Reader, M365Settings], Any]:
    return lambda reader, _settings: strip_annotations(reader.body(path) or [])


def _body(path: str) -> Callable[[_Reader, M365Settings], Any]:
    return lambda reader, _settings: strip_annotations(reader.body(path))


def _collection(path: str) -> Callable[[_Reader, M365Settings], Any]:
    return lambda reader, _settings: strip_annotations(reader.value(path))


# Section name -> how to build it.
SECTIONS: dict[str, Callable[[_Reader, M365Settings], Any]] = {
    "m365.vendors": lambda r, _s: _vendors(r),
    "m365.entra.conditional_access": _ca,
    "m365.entra.security_defaults": _body(
        "graph/v1.0/policies/identitySecurityDefaultsEnforcementPolicy"
    ),
    "m365.entra.role_coverage": _role_coverage,
    "m365.entra.user_registration": _registration,
    "m365.entra.authorization_policy": _body("graph/v1.0/policies/authorizationPolicy"),
    "m365.entra.authentication_methods_policy": _body(
        "graph/v1.0/policies/authenticationMethodsPolicy"
    ),
    "m365.entra.domains": _collection("graph/v1.0/domains"),
    "m365.entra.secure_score": lambda r, _s: strip_annotations(
        r.value("graph/v1.0/security/secureScores")[:1]
    ),
    "m365.sharepoint.settings": _body("graph/v1.0/admin/sharepoint/settings"),
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
    "m365.exo.accepted_domains": _cmdlet("exo/Get-AcceptedDomain"),
    "m365.purview.dlp": lambda r, _s: _dlp(r),
    "m365.purview.retention": lambda r, _s: _retention(r),
    "m365.purview.audit_retention": lambda r, _s: _audit_retention(r),
}


# Sections built from Exchange and Security & Compliance answers alone: they can be worked out
# while the (longer) Graph reads are still running.
ADMIN_API_SECTIONS = frozenset(
    name
    for name in SECTIONS
    if name.startswith(("m365.exo.", "m365.purview.")) and name != "m365.exo.dkim_domains"
)


def normalise(
    fetched: FetchedMap, settings: M365Settings, only: frozenset[str] | None = None
) -> list[SectionOut]:
    """Every `m365.*` section (or those named in `only`); one whose answers are missing is an
    error with the reason (naming the missing permission or licence where that is the cause)."""
    out = []
    memo: dict[str, tuple[Any, list[Fetched]]] = {}
    for name, build in SECTIONS.items():
        if only is not None and name not in only:
            continue
        reader = _Reader(fetched, memo=memo)
        try:
            data = build(reader, settings)
        except _Missing as missing:
            source = _source_of(reader.used) or _source_for_path(missing.path)
            out.append(SectionOut(name, None, source, _raws(reader.used), "error", missing.reason))
            continue
        out.append(SectionOut(name, data, _source_of(reader.used), _raws(reader.used)))
    return out


def _source_of(used: Iterable[Fetched]) -> str:
    return " + ".join(dict.fromkeys(f.source for f in used))


def _raws(used: Iterable[Fetched]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.raw_path for f in used if f.ok))


def _source_for_path(path: str) -> str:
    kind, _, rest = path.partition("/")
    return f"graph:GET /{rest}" if kind == "graph" else f"{kind}:{rest}"
