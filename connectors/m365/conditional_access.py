"""A Conditional Access policy as facts: whom and what it covers, what limits it to some sign-ins,
and whether its grant can be met without multi-factor authentication.

The rule throughout is that a value this module does not understand never widens coverage: a
condition it does not know, present with a value, limits the policy; an authentication method it
does not know is not multi-factor; a grant operator it does not know requires nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Authentication method modes (Graph's authenticationMethodModes) that are multi-factor on their
# own; the built-in "Multifactor authentication" strength lists each of them alone.
MULTIFACTOR_ALONE = frozenset(
    {
        "windowsHelloForBusiness",
        "fido2",
        "x509CertificateMultiFactor",
        "deviceBasedPush",
        "temporaryAccessPassOneTime",
        "temporaryAccessPassMultiUse",
        "federatedMultiFactor",
    }
)
# Every mode Graph documents. A combination of two of them ("password,sms") is two factors.
KNOWN_MODES = MULTIFACTOR_ALONE | {
    "password",
    "voice",
    "hardwareOath",
    "softwareOath",
    "sms",
    "microsoftAuthenticatorPush",
    "email",
    "x509CertificateSingleFactor",
    "federatedSingleFactor",
    "qrCodePin",
}
# The built-in "Phishing-resistant MFA" strength.
PHISHING_RESISTANT = frozenset({"windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"})
# Grant controls met only from a device the organisation manages: marked compliant by Intune, or
# Microsoft Entra hybrid joined (Graph's builtInControls values).
MANAGED_DEVICE_CONTROLS = frozenset({"compliantDevice", "domainJoinedDevice"})

# Condition keys read on their own below; every other key of `conditions` limits the policy
# whenever it holds a value (a risk level, a platform, a location, a device filter, an insider
# risk level, an authentication flow, a workload identity, or something added after this code).
_READ_SEPARATELY = frozenset({"users", "applications", "clientAppTypes"})
_USER_KEYS = frozenset(
    {
        "includeUsers",
        "excludeUsers",
        "includeGroups",
        "excludeGroups",
        "includeRoles",
        "excludeRoles",
        "includeGuestsOrExternalUsers",
        "excludeGuestsOrExternalUsers",
    }
)
_APPLICATION_KEYS = frozenset({"includeApplications", "excludeApplications"})


def _empty(value: Any) -> bool:
    """Unset, as Graph writes an unset condition: null, [], {}, "" (or an object of those)."""
    if value is None or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, Mapping):
        return all(_empty(v) for k, v in value.items() if "@" not in str(k))
    return False


def _covers_everything(key: str, value: Any) -> bool:
    """Platforms or locations that include all and exclude none: present, but no limit."""
    if not isinstance(value, Mapping):
        return False
    include, exclude = {
        "platforms": ("includePlatforms", "excludePlatforms"),
        "locations": ("includeLocations", "excludeLocations"),
    }.get(key, ("", ""))
    if not include:
        return False
    included = [str(v).lower() for v in value.get(include) or []]
    others = {k for k in value if "@" not in str(k)} - {include, exclude}
    return (
        included == ["all"] and _empty(value.get(exclude)) and all(_empty(value[k]) for k in others)
    )


def limiting_conditions(conditions: Mapping[str, Any]) -> list[str]:
    """Names of the conditions that limit a policy to some sign-ins, apps or users only (the
    client app types aside, which callers judge themselves)."""
    limits: list[str] = []
    for key, value in conditions.items():
        if "@" in key or key in _READ_SEPARATELY or _empty(value):
            continue
        if key in ("platforms", "locations") and _covers_everything(key, value):
            continue
        limits.append(key)
    # Within users and applications: includeUserActions, includeAuthenticationContextClass-
    # References, applicationFilter, and anything newer each limit the policy.
    limits += _unread_members("users", conditions.get("users"), _USER_KEYS)
    limits += _unread_members("applications", conditions.get("applications"), _APPLICATION_KEYS)
    return limits


def beta_only_limits(policy: Mapping[str, Any], beta: Mapping[str, Any] | None) -> list[str]:
    """The conditions that limit a policy in Graph beta's answer but not in v1.0's (each as
    `beta:<name>`): a condition v1.0 does not show yet still narrows the policy. A policy
    missing from beta's answer, or whose beta conditions are not an object, is limited by what
    could not be seen."""
    if beta is None:
        return ["beta:(the policy is not in Graph beta's answer)"]
    conditions = beta.get("conditions")
    if conditions is None:
        conditions = {}
    if not isinstance(conditions, Mapping):
        return ["beta:(unreadable conditions)"]
    seen = set(limiting_conditions(policy.get("conditions") or {}))
    return [f"beta:{c}" for c in limiting_conditions(conditions) if c not in seen]


def _unread_members(name: str, value: Any, read: frozenset[str]) -> list[str]:
    """`name.member` for each member of a condition object, other than those read on their
    own, that holds a value; the whole condition when it is not an object at all."""
    if value is None or value == {}:
        return []
    if not isinstance(value, Mapping):
        return [name]
    return [
        f"{name}.{k}" for k, v in value.items() if "@" not in k and k not in read and not _empty(v)
    ]


def _strings(value: Any) -> list[str]:
    """A condition's list of values; anything else (an odd shape) as no value at all: the
    condition still narrows the policy (`limiting_conditions`), so nothing widens."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _transfer_methods(flows: Any) -> list[str]:
    """`authenticationFlows.transferMethods`: Graph's flag enumeration, one comma-separated
    string ("deviceCodeFlow,authenticationTransfer")."""
    methods = flows.get("transferMethods") if isinstance(flows, Mapping) else None
    if not isinstance(methods, str):
        return []
    return [m.strip() for m in methods.split(",") if m.strip()]


def combination_is_multifactor(combination: str) -> bool:
    modes = [m.strip() for m in combination.split(",") if m.strip()]
    if not modes or any(m not in KNOWN_MODES for m in modes):
        return False
    return len(modes) >= 2 or modes[0] in MULTIFACTOR_ALONE


def strength_facts(
    given: Mapping[str, Any], known: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """An authentication strength judged by its allowed combinations: the tenant's own list of
    strengths (built-in and custom) when it names this one, else what the policy carries."""
    strength_id = given.get("id")
    listed = known.get(str(strength_id)) if strength_id is not None else None
    source = listed if listed is not None else given
    raw = source.get("allowedCombinations")
    combinations = sorted({str(c) for c in raw}) if isinstance(raw, list) else []
    resolved = isinstance(raw, list)
    return {
        "id": strength_id,
        "displayName": source.get("displayName") or given.get("displayName"),
        "policyType": source.get("policyType"),
        "allowedCombinations": combinations,
        "resolved": resolved,
        "single_factor_combinations": [
            c for c in combinations if not combination_is_multifactor(c)
        ],
        # An empty list, or one it could not read, allows nothing it can vouch for.
        "multifactor": bool(combinations) and all(map(combination_is_multifactor, combinations)),
        "phishing_resistant": bool(combinations)
        and all(c in PHISHING_RESISTANT for c in combinations),
    }


def grant_facts(
    grant: Mapping[str, Any], strengths: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Whether every way of meeting the grant includes MFA (and phishing-resistant MFA).

    With OR, any one control lets the sign-in through, so each must be MFA; with AND, one MFA
    control among them is enough. Terms of use and custom controls are ways through that are not
    MFA. An operator other than AND or OR requires nothing this code can vouch for."""
    builtin = [str(c) for c in grant.get("builtInControls") or []]
    given = grant.get("authenticationStrength")
    strength = strength_facts(given, strengths) if isinstance(given, Mapping) else None
    # Each way of meeting the grant: (is it MFA, is it phishing-resistant MFA, does it need a
    # managed device: compliant, or joined to the organisation's domain).
    ways: list[tuple[bool, bool, bool]] = [
        (c == "mfa", False, c in MANAGED_DEVICE_CONTROLS) for c in builtin if c != "block"
    ]
    if strength is not None:
        ways.append((strength["multifactor"], strength["phishing_resistant"], False))
    for key in ("termsOfUse", "customAuthenticationFactors"):
        ways += [(False, False, False) for _ in grant.get(key) or []]
    operator = str(grant.get("operator") or "OR").upper()
    if not ways or operator not in ("AND", "OR"):
        mfa = phishing_resistant = managed = False
    else:
        # With AND (or one way only) one such control among them is enough; with OR each must
        # be one.
        meets = any if operator == "AND" or len(ways) == 1 else all
        mfa = meets(w[0] for w in ways)
        phishing_resistant = meets(w[1] for w in ways)
        managed = meets(w[2] for w in ways)
    return {
        "grant_operator": grant.get("operator"),
        "grant_controls": builtin,
        "requires_mfa": mfa,
        "blocks": "block" in builtin,
        "authentication_strength": strength,
        "phishing_resistant": phishing_resistant,
        "requires_managed_device": managed,
    }


def policy_facts(
    policy: Mapping[str, Any],
    break_glass: set[str],
    names: Mapping[str, str],
    strengths: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """One Conditional Access policy as facts: whom and what it covers, what it grants, what
    limits it, and every exclusion that is not a declared break-glass account."""
    conditions = policy.get("conditions") or {}
    users = conditions.get("users") or {}
    apps = conditions.get("applications") or {}
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
    if not _empty(guests):
        kinds = guests.get("guestOrExternalUserTypes") if isinstance(guests, Mapping) else None
        exclusions.append(
            {"kind": "guests", "id": None, "name": kinds or "guests or external users"}
        )
    for app in apps.get("excludeApplications") or []:
        exclusions.append({"kind": "application", "id": app, "name": app})
    client_apps = [str(c) for c in conditions.get("clientAppTypes") or ["all"]]
    narrowed_by = limiting_conditions(conditions)
    scoped_by = narrowed_by + ([] if client_apps == ["all"] else ["clientAppTypes"])
    grant = grant_facts(policy.get("grantControls") or {}, strengths)
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
        # The values of three narrowing conditions, for the controls that target exactly them
        # (blocking high-risk users, high-risk sign-ins, the device code flow).
        "user_risk_levels": _strings(conditions.get("userRiskLevels")),
        "sign_in_risk_levels": _strings(conditions.get("signInRiskLevels")),
        "transfer_methods": _transfer_methods(conditions.get("authenticationFlows")),
        # User actions (registering security information, registering or joining devices): a
        # policy that targets one applies to that action, not to sign-ins to apps.
        "user_actions": _strings(apps.get("includeUserActions")),
        "narrowed_by": narrowed_by,
        "scoped_by": scoped_by,
        **grant,
        "unexpected_exclusions": exclusions,
        "break_glass_exclusions": break_glass_excluded,
    }


def _flags(value: Any) -> list[str]:
    """A flag enumeration as Graph writes it, one comma-separated string ("medium,high"); a
    list of strings is read the same way. Anything else is no value."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return _strings(value)


def _listed(condition: Any, key: str) -> list[str]:
    """An exclusion list's strings; an exclusion that holds something other than a list of
    strings excludes what could not be read, and says so (it never reads as no exclusion)."""
    value = condition.get(key) if isinstance(condition, Mapping) else None
    if _empty(value):
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return [f"{key}: (unreadable)"]


def agent_policy_facts(policy: Mapping[str, Any]) -> dict[str, Any]:
    """One Conditional Access policy (Graph beta) as facts about agent identities: which agents
    and which of their risk levels it targets, and what else limits it."""
    conditions = policy.get("conditions") or {}
    apps = conditions.get("applications") or {}
    clients = conditions.get("clientApplications") or {}
    if not isinstance(clients, Mapping):
        clients = {}
    agent_exclusions = _listed(clients, "excludeAgentIdServicePrincipals")
    if not _empty(clients.get("agentIdServicePrincipalFilter")):
        agent_exclusions.append("agentIdServicePrincipalFilter")
    # Within clientApplications, members other than the agent identities (service principals,
    # workload identity filters) limit the policy too.
    agent_keys = {"includeAgentIdServicePrincipals", "excludeAgentIdServicePrincipals"}
    other_clients = [
        f"clientApplications.{k}"
        for k, v in clients.items()
        if "@" not in k
        and k not in agent_keys
        and k != "agentIdServicePrincipalFilter"
        and not _empty(v)
    ]
    narrowed_by = [c for c in limiting_conditions(conditions) if c != "clientApplications"]
    builtin = [str(c) for c in (policy.get("grantControls") or {}).get("builtInControls") or []]
    return {
        "id": policy.get("id"),
        "displayName": policy.get("displayName"),
        "state": policy.get("state"),
        "enforced": policy.get("state") == "enabled",
        "all_applications": "All" in (apps.get("includeApplications") or []),
        "excluded_applications": _listed(apps, "excludeApplications"),
        "client_app_types": [str(c) for c in conditions.get("clientAppTypes") or ["all"]],
        "agents": _strings(clients.get("includeAgentIdServicePrincipals")),
        "agent_exclusions": agent_exclusions,
        "agent_risk_levels": _flags(conditions.get("agentIdRiskLevels")),
        "narrowed_by": narrowed_by + other_clients,
        "blocks": "block" in builtin,
    }
