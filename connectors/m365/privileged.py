"""Facts about privileged access and application credentials, from Graph's answers: who holds
each highly privileged directory role and how (active or eligible, permanent or time-bound,
through PIM or directly), PIM's settings for those roles, and the tenant's default restrictions
on application secrets and certificates.

Neutral facts only: what is *required* of them is the policies' business. Anything this code
does not recognise reads as the narrower fact (an unknown principal type is not a user whose
account is known to be cloud-only; an unreadable duration is no limit at all)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.m365.purview import UnreadableShape

GLOBAL_ADMINISTRATOR = "Global Administrator"
# SCuBA's highly privileged roles (ScubaGear's DefaultPrivilegedRoles, MS.AAD.7.x).
SCUBA_PRIVILEGED_ROLES = (
    GLOBAL_ADMINISTRATOR,
    "Privileged Role Administrator",
    "User Administrator",
    "SharePoint Administrator",
    "Exchange Administrator",
    "Hybrid Identity Administrator",
    "Application Administrator",
    "Cloud Application Administrator",
)
# Built-in directory roles every tenant defines (Microsoft Entra built-in roles reference, and
# Graph's list-roleDefinitions example): the privileged ones the MFA control protects by
# default, by template id. A role definitions answer without one of them was not read whole.
PRIVILEGED_TEMPLATES = {
    "62e90394-69f5-4237-9190-012177145e10": GLOBAL_ADMINISTRATOR,
    "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
    "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
    "f28a1f50-f6e7-4571-818b-6a12f2af6b6c": "SharePoint Administrator",
    "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
    "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2": "Hybrid Identity Administrator",
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3": "Application Administrator",
    "158c047a-c907-4556-b7ef-446551a6b5f7": "Cloud Application Administrator",
    "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
    "17315797-102d-40b4-93e0-432062caca18": "Compliance Administrator",
}
_USER = "#microsoft.graph.user"
_GROUP = "#microsoft.graph.group"
_SERVICE_PRINCIPAL = "#microsoft.graph.servicePrincipal"
_KINDS = {_USER: "user", _GROUP: "group", _SERVICE_PRINCIPAL: "servicePrincipal"}


def _items(data: Any, what: str) -> list[dict[str, Any]]:
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UnreadableShape(f"{what}: the answer holds no list of objects")
    return items


def role_ids(definitions: Any, names: Sequence[str]) -> dict[str, str]:
    """Role name -> every id the role goes by (its id and template id), for the named roles the
    tenant defines; raises for a name it does not (a misspelt role judges nothing)."""
    wanted = {n.lower(): n for n in names}
    found: dict[str, str] = {}
    for role in _items(definitions, "roleDefinitions"):
        name = wanted.get(str(role.get("displayName", "")).lower())
        if name is None:
            continue
        for key in ("id", "templateId"):
            if isinstance(role.get(key), str):
                found[role[key]] = name
    missing = [n for n in names if n not in found.values()]
    if missing:
        raise UnreadableShape(
            f"roleDefinitions: no role named {', '.join(missing)} (privileged_roles in the "
            "[m365] config names roles by their display names)"
        )
    return found


def _template(ids: Mapping[str, str], name: str) -> str:
    # A built-in role's id is its template id; a custom role's is its own.
    return next(i for i, n in ids.items() if n == name)


def privileged_user_ids(
    definitions: Any, instances: Iterable[Any], names: Sequence[str]
) -> list[str]:
    """The users who hold one of the named roles in any of the instance lists, for the
    connector's look-up of their accounts. Best effort: an answer it cannot read adds nobody
    (the section built from it says what is wrong)."""
    try:
        ids = role_ids(definitions, names)
    except UnreadableShape:
        return []
    out: dict[str, None] = {}
    for data in instances:
        try:
            items = _items(data, "instances")
        except UnreadableShape:
            continue
        for item in items:
            principal = item.get("principal")
            kind = principal.get("@odata.type") if isinstance(principal, dict) else None
            if item.get("roleDefinitionId") in ids and kind == _USER:
                out[str(item.get("principalId"))] = None
    return list(out)


def _principal(item: Mapping[str, Any]) -> tuple[str, str, str]:
    principal = item.get("principal")
    principal = principal if isinstance(principal, dict) else {}
    kind = _KINDS.get(str(principal.get("@odata.type")), "unknown")
    name = principal.get("userPrincipalName") or principal.get("displayName") or ""
    return str(item.get("principalId")), kind, str(name)


def _break_glass(principal_id: str, name: str, break_glass: Iterable[str]) -> bool:
    wanted = {b.lower() for b in break_glass}
    return principal_id.lower() in wanted or (bool(name) and name.lower() in wanted)


def privileged_roles(
    definitions: Any,
    eligible: Any,
    active: Any,
    users: Mapping[str, Any | None],
    names: Sequence[str],
    break_glass: Sequence[str],
) -> dict[str, Any]:
    """Per privileged role, who holds it and how; per user holding one, which roles and
    whether the account is cloud-only. `users` maps a user id to its looked-up account (None
    when the look-up failed)."""
    ids = role_ids(definitions, names)
    roles: dict[str, dict[str, Any]] = {
        name: {
            "displayName": name,
            "templateId": _template(ids, name),
            "assignments": [],
            "permanent_active": [],
            "assigned_outside_pim": [],
            "group_principals": [],
        }
        for name in names
    }
    holders: dict[str, dict[str, Any]] = {}
    others: dict[str, dict[str, Any]] = {}
    for state, data in (("eligible", eligible), ("active", active)):
        what = f"role{'Eligibility' if state == 'eligible' else 'Assignment'}ScheduleInstances"
        for item in _items(data, what):
            role_name = ids.get(str(item.get("roleDefinitionId")))
            if role_name is None:
                continue
            role = roles[role_name]
            principal_id, kind, name = _principal(item)
            start, end = item.get("startDateTime"), item.get("endDateTime")
            # Only a user is a break-glass account: a group or service principal whose name
            # happens to match one is not set aside.
            glass = kind == "user" and _break_glass(principal_id, name, break_glass)
            role["assignments"].append(
                {
                    "principalId": principal_id,
                    "principal_type": kind,
                    "principal": name,
                    "state": state,
                    "assignmentType": item.get("assignmentType"),
                    "memberType": item.get("memberType"),
                    "directoryScopeId": item.get("directoryScopeId"),
                    "startDateTime": start,
                    "endDateTime": end,
                    "break_glass": glass,
                }
            )
            shown = name or principal_id
            if state == "active" and end is None and not glass:
                role["permanent_active"].append(shown)
            # PIM gives every assignment it makes a start; one made around it has none
            # (ScubaGear reads the missing start the same way).
            if state == "active" and start is None:
                role["assigned_outside_pim"].append(shown)
            if kind == "user":
                holder = holders.setdefault(principal_id, {"roles": []})
                if role_name not in holder["roles"]:
                    holder["roles"].append(role_name)
            else:
                other = others.setdefault(
                    principal_id, {"id": principal_id, "type": kind, "name": name, "roles": []}
                )
                if role_name not in other["roles"]:
                    other["roles"].append(role_name)
                if kind != "servicePrincipal" and shown not in role["group_principals"]:
                    role["group_principals"].append(shown)
    user_rows = [_user_row(i, holders[i]["roles"], users.get(i)) for i in holders]
    ga = [u for u in user_rows if GLOBAL_ADMINISTRATOR in u["roles"]]
    rest = [u for u in user_rows if GLOBAL_ADMINISTRATOR not in u["roles"]]
    return {
        "roles_considered": list(names),
        "roles": list(roles.values()),
        "users": user_rows,
        "global_administrators": [u["userPrincipalName"] or u["id"] for u in ga],
        "other_privileged_users": [u["userPrincipalName"] or u["id"] for u in rest],
        # ScubaGear's "least privilege score": Global Administrators per privileged user
        # without that role (null when there is none).
        "least_privilege_score": round(len(ga) / len(rest), 4) if rest else None,
        # Roles held through a group (its members are not counted here: PIM for Groups'
        # eligible members are not read) or by a principal of a type not recognised.
        "non_user_principals": [o for o in others.values() if o["type"] != "servicePrincipal"],
        "service_principals": [o for o in others.values() if o["type"] == "servicePrincipal"],
    }


def _user_row(user_id: str, roles: list[str], account: Any | None) -> dict[str, Any]:
    account = account if isinstance(account, dict) else {}
    immutable = account.get("onPremisesImmutableId")
    synced = account.get("onPremisesSyncEnabled")
    return {
        "id": user_id,
        "userPrincipalName": account.get("userPrincipalName"),
        "displayName": account.get("displayName"),
        "roles": roles,
        "account_read": bool(account),
        "onPremisesImmutableId": immutable,
        "onPremisesSyncEnabled": synced,
        # Cloud-only: read, with no on-premises anchor and not synchronised.
        "cloud_only": bool(account) and immutable is None and synced is not True,
    }


def _rule(rules: list[Any], rule_id: str) -> dict[str, Any] | None:
    return next((r for r in rules if isinstance(r, dict) and r.get("id") == rule_id), None)


def _recipients(rule: dict[str, Any] | None) -> list[str]:
    # Only an e-mail rule alerts anyone, and only at a level that sends something (Graph's
    # notificationLevel: None, Critical or All); an unknown kind or level alerts no one.
    if rule is None or rule.get("notificationType") != "Email":
        return []
    if rule.get("notificationLevel") not in ("All", "Critical"):
        return []
    recipients = rule.get("notificationRecipients")
    return [str(r) for r in recipients] if isinstance(recipients, list) else []


def role_management_policies(
    definitions: Any, assignments: Any, names: Sequence[str], holders: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per privileged role, PIM's settings for it: whether activation needs approval, and who
    is e-mailed (beyond the default recipients) on an eligible or active assignment and on an
    activation. `holders` is the privileged_roles section (for the groups holding a role,
    whose own PIM for Groups settings are not read)."""
    ids = role_ids(definitions, names)
    by_role: dict[str, dict[str, Any]] = {}
    for item in _items(assignments, "roleManagementPolicyAssignments"):
        if item.get("scopeId") != "/" or item.get("scopeType") not in (
            "DirectoryRole",
            "Directory",
        ):
            continue
        name = ids.get(str(item.get("roleDefinitionId")))
        if name is not None:
            by_role.setdefault(name, item)
    groups = {r["displayName"]: r["group_principals"] for r in holders["roles"]}
    out = []
    for name in names:
        found = by_role.get(name)
        policy = found.get("policy") if found else None
        rules = policy.get("rules") if isinstance(policy, dict) else None
        rules = rules if isinstance(rules, list) else []
        approval = _rule(rules, "Approval_EndUser_Assignment")
        setting = approval.get("setting") if approval else None
        required = setting.get("isApprovalRequired") if isinstance(setting, dict) else None
        out.append(
            {
                "displayName": name,
                "templateId": _template(ids, name),
                "policy_read": bool(rules),
                "policyId": found.get("policyId") if found else None,
                "activation_requires_approval": required is True,
                "eligible_assignment_alert_recipients": _recipients(
                    _rule(rules, "Notification_Admin_Admin_Eligibility")
                ),
                "active_assignment_alert_recipients": _recipients(
                    _rule(rules, "Notification_Admin_Admin_Assignment")
                ),
                "activation_alert_recipients": _recipients(
                    _rule(rules, "Notification_Admin_EndUser_Assignment")
                ),
                "group_principals": list(groups.get(name, [])),
                "rules": rules,
            }
        )
    return out


# .NET's DateTime.MinValue: "applies to every app, whenever created" (ISO, or the legacy form
# ScubaGear's export shows).
_ALL_APPS = re.compile(r"^(?:0001-01-01(?:T00:00:00(?:\.0+)?Z?)?|/Date\(-62135596800000\)/)$")
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def duration_days(value: Any) -> float | None:
    """An ISO 8601 duration of days and time (`P180D`, `P4DT12H30M5S`) in days; None for any
    other form (years and months have no fixed length: read as no limit)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value != "P" else None
    if match is None or value.endswith("T"):
        return None
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    days = parts["d"] + parts["h"] / 24 + parts["m"] / 1440 + parts["s"] / 86400
    return round(days, 4)


def _restrictions(scope: Any, member: str, where: str) -> list[dict[str, Any]]:
    value = scope.get(member) if isinstance(scope, dict) else None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise UnreadableShape(f"defaultAppManagementPolicy: {where}.{member} is not a list")
    return value


def _in_force(restriction: dict[str, Any]) -> bool:
    return restriction.get("state") == "enabled"


def _scope_facts(enabled: bool, scope: Any, where: str) -> dict[str, Any]:
    if scope is not None and not isinstance(scope, dict):
        raise UnreadableShape(f"defaultAppManagementPolicy: {where} is not an object")
    passwords = _restrictions(scope, "passwordCredentials", where)
    keys = _restrictions(scope, "keyCredentials", where)

    def all_apps(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [
            r
            for r in items
            if enabled
            and r.get("restrictionType") == kind
            and _in_force(r)
            and _ALL_APPS.fullmatch(str(r.get("restrictForAppsCreatedAfterDateTime")))
        ]

    def lifetime(items: list[dict[str, Any]], kind: str) -> float | None:
        days = [duration_days(r.get("maxLifetime")) for r in all_apps(items, kind)]
        known = [d for d in days if d is not None]
        return min(known) if known else None

    return {
        "password_addition_blocked": bool(all_apps(passwords, "passwordAddition")),
        "password_lifetime_days": lifetime(passwords, "passwordLifetime"),
        "certificate_lifetime_days": lifetime(keys, "asymmetricKeyLifetime"),
        # Restrictions in force for apps created after a date only (older apps are exempt).
        "limited_to_newer_apps": sorted(
            {
                str(r.get("restrictionType"))
                for r in [*passwords, *keys]
                if _in_force(r)
                and not _ALL_APPS.fullmatch(str(r.get("restrictForAppsCreatedAfterDateTime")))
            }
        ),
    }


def app_management(default: dict[str, Any], custom: list[Any]) -> dict[str, Any]:
    """The default app management policy with, per object kind, what it restricts for every
    app; and the enabled app-specific policies, which replace the default for the apps they
    are applied to (which those are is not read: each one counts as an exemption wherever it
    does not itself restrict as much)."""
    enabled = default.get("isEnabled") is True
    out = dict(default)
    out["applications"] = _scope_facts(
        enabled, default.get("applicationRestrictions"), "applicationRestrictions"
    )
    out["service_principals"] = _scope_facts(
        enabled, default.get("servicePrincipalRestrictions"), "servicePrincipalRestrictions"
    )
    policies = []
    for policy in custom:
        if not isinstance(policy, dict):
            raise UnreadableShape("appManagementPolicies: an item is not an object")
        if policy.get("isEnabled") is False:
            continue
        facts = _scope_facts(True, policy.get("restrictions"), "restrictions")
        # An app-specific policy's restrictions apply as if for every app it is applied to.
        policies.append(
            {
                "id": policy.get("id"),
                "displayName": policy.get("displayName"),
                "password_addition_blocked": facts["password_addition_blocked"],
                "password_lifetime_days": facts["password_lifetime_days"],
                "certificate_lifetime_days": facts["certificate_lifetime_days"],
            }
        )
    out["app_specific_policies"] = policies
    return out
