"""Which Exchange Online Protection and Defender for Office 365 policies are in force, and for
whom: a policy together with the rule (or preset rule) that says who it applies to.

Microsoft applies to each recipient the first policy whose rule matches, in this order: the
Strict preset, the Standard preset, custom policies by their rule's priority, and last the
default policy (anti-malware, anti-spam, anti-phishing) or the built-in protection policy (Safe
Links, Safe Attachments). ("Order and precedence of email protection", Microsoft Learn; the same
order ScubaGear's SecuritySuite Rego walks.) So the policies that decide what some recipient
gets are those met in that order up to and including the first that applies to everyone; every
later one applies to no one. `in_force` lists exactly those, so a control can ask that each of
them does what it must: a policy that applies to some recipients is judged, never skipped.

Fail closed: a rule applies to everyone only when it is enabled and nothing in it narrows it.
A state other than Enabled/Disabled, a recipient condition or exception, a condition this code
does not know, or a RecipientDomainIs list short of the tenant's accepted domains makes it
"some": the policy is judged, and does not count as covering everyone. A policy is placed by
the rule that applies it (a preset rule names its policies as a custom rule does), never by its
name: a custom policy named like a preset is still a custom policy. A rule whose priority cannot
be read cannot be placed in the order: its policy is judged whatever comes before it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auditor.timeutil import parse_isoz
from connectors.m365.purview import UnreadableShape

# Preset policies are named "<preset> Preset Security Policy<digits>" and their rules
# "<preset> Preset Security Policy" (ScubaGear's sample export; its Rego matches the same way).
PRESETS = (
    ("strict", re.compile(r"(?i)^strict preset security policy")),
    ("standard", re.compile(r"(?i)^standard preset security policy")),
)
# Recipient conditions a rule may have whose effect is known (Get-*Rule references: SentTo,
# SentToMemberOf, RecipientDomainIs and their ExceptIf forms). Any other condition narrows.
_KNOWN_CONDITIONS = frozenset(
    {
        "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.SentToPredicate",
        "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.SentToMemberOfPredicate",
        "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.RecipientDomainIsPredicate",
    }
)
_NARROWING = ("SentTo", "SentToMemberOf")
_RECIPIENT_PREDICATES = frozenset(
    f"Microsoft.Exchange.MessagingPolicies.Rules.Tasks.{n}Predicate" for n in _NARROWING
)
_DOMAIN_PREDICATE = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.RecipientDomainIsPredicate"
# Cmdlets of Microsoft Defender for Office 365 (Plan 1 or 2). A tenant without that licence
# answers them as if they did not exist ("The term 'Get-SafeAttachmentPolicy' is not recognized
# as the name of a cmdlet": Microsoft365DSC issue #3131, Maester issue #466): their sections are
# then an error that says so; the controls that need them cannot pass.
DEFENDER_CMDLETS = frozenset(
    f"exo/{c}"
    for c in (
        "Get-SafeLinksPolicy",
        "Get-SafeLinksRule",
        "Get-SafeAttachmentPolicy",
        "Get-SafeAttachmentRule",
        "Get-ATPProtectionPolicyRule",
        "Get-ATPBuiltInProtectionRule",
        "Get-AtpPolicyForO365",
    )
)
DEFENDER_HINT = (
    "Safe Links, Safe Attachments and their preset and built-in rules exist only in tenants "
    "licensed for Microsoft Defender for Office 365 (Plan 1 or 2); a tenant without it answers "
    "as if the cmdlet did not exist, and a missing role looks the same"
)


def with_defender_hint(status: int, reason: str) -> str:
    """The reason a Defender cmdlet's read failed, with the licence named when the answer is
    a refusal (what a tenant without Defender gives). A server fault, a throttle or a dropped
    connection says nothing about the licence, and the hint would send the reader the wrong way."""
    refused = status in (400, 403, 404) or "is not recognized" in reason
    if not refused:
        return reason
    return f"{reason.rstrip(' .')}. {DEFENDER_HINT}"


@dataclass(frozen=True)
class Family:
    """One kind of protection policy: its rules name the policy in `link`."""

    link: str  # the rule member naming its policy (MalwareFilterPolicy, SafeLinksPolicy, ...)
    last: str  # "default" (IsDefault) or "built-in" (the built-in protection policy)


MALWARE = Family("MalwareFilterPolicy", "default")
CONTENT_FILTER = Family("HostedContentFilterPolicy", "default")
ANTI_PHISH = Family("AntiPhishPolicy", "default")
SAFE_LINKS = Family("SafeLinksPolicy", "built-in")
SAFE_ATTACHMENTS = Family("SafeAttachmentPolicy", "built-in")


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == ""


def _names(policy: Mapping[str, Any]) -> set[str]:
    return {str(policy[k]).lower() for k in ("Identity", "Name", "Id") if policy.get(k)}


def rule_reach(rule: Mapping[str, Any], domains: set[str] | None) -> str:
    """ "everyone", "some" or "none": whom a rule applies its policy to. `domains`: the
    tenant's accepted domains (lower case), None when they could not be read."""
    state = rule.get("State")
    if state == "Disabled":
        return "none"
    narrowed = state != "Enabled"
    narrowed |= any(not _empty(rule.get(k)) for k in _NARROWING)
    # Every exception narrows, whichever it is (ExceptIfSentTo, ...MemberOf, ...DomainIs, new).
    narrowed |= any(k.startswith("ExceptIf") and not _empty(v) for k, v in rule.items())
    narrowed |= not _empty(rule.get("Exceptions"))
    conditions = rule.get("Conditions")
    if isinstance(conditions, list) and set(conditions) <= _KNOWN_CONDITIONS:
        # A recipient condition named in Conditions narrows even when its own member is absent
        # or empty in the answer: what it lists was not read.
        narrowed |= bool(set(conditions) & _RECIPIENT_PREDICATES)
        if _DOMAIN_PREDICATE in conditions:
            narrowed |= _empty(rule.get("RecipientDomainIs"))
    elif not _empty(conditions):
        narrowed = True
    listed = rule.get("RecipientDomainIs")
    if not _empty(listed):
        wanted = {str(d).lower() for d in listed} if isinstance(listed, list) else set()
        narrowed |= domains is None or not domains or not domains <= wanted
    return "some" if narrowed else "everyone"


def priority(rule: Mapping[str, Any]) -> int | None:
    """An object's Priority (lower first), None when it is not an integer."""
    value = rule.get("Priority")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _preset(policy: Mapping[str, Any]) -> str | None:
    """The preset a policy says it belongs to, for a preset rule that names no policy of this
    family: its RecommendedPolicyType when the answer has one, else its name."""
    kind = policy.get("RecommendedPolicyType")
    if kind is not None:
        kind = str(kind).lower()
        return kind if kind in dict(PRESETS) else None
    for name, pattern in PRESETS:
        if any(pattern.match(n) for n in _names(policy)):
            return name
    return None


def _is_last(family: Family, policy: Mapping[str, Any]) -> bool:
    if family.last == "default":
        if "IsDefault" in policy:
            return policy.get("IsDefault") is True
        return "default" in _names(policy)
    return policy.get("IsBuiltInProtection") is True or "built-in protection policy" in _names(
        policy
    )


def _entry(policy: Mapping[str, Any], tier: str, reach: str, rule: str | None) -> dict[str, Any]:
    return {**policy, "tier": tier, "applies_to": reach, "rule": rule}


def in_force(
    family: Family,
    policies: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    preset_rules: list[dict[str, Any]],
    domains: set[str] | None,
    last_rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The section: the policies in force in precedence order (see the module's docstring),
    whether one of them applies to everyone, and how many policies there are in all.

    `last_rules`: for a built-in family, the built-in protection rules (their exceptions narrow
    the built-in policy); None when the family has a default policy instead."""
    ordered: list[dict[str, Any]] = []
    unordered: list[dict[str, Any]] = []
    by_name = {n: p for p in policies for n in _names(p)}
    for tier, pattern in PRESETS:
        for rule in preset_rules:
            if not any(pattern.match(n) for n in _names(rule)):
                continue
            reach = rule_reach(rule, domains)
            if reach == "none":
                continue
            for policy in _preset_policies(family, rule, tier, policies, by_name):
                ordered.append(_entry(policy, tier, reach, f"{tier} preset"))
    placed = sorted((r for r in rules if priority(r) is not None), key=lambda r: r["Priority"])
    for rule in [*placed, *(r for r in rules if priority(r) is None)]:
        reach = rule_reach(rule, domains)
        if reach == "none":
            continue
        linked = _linked(family, rule, by_name)
        name = rule.get("Name") or rule.get("Identity") or rule.get(family.link)
        entry = _entry(linked, "custom", reach, str(name))
        (ordered if priority(rule) is not None else unordered).append(entry)
    for policy in policies:
        if _is_last(family, policy):
            reach = "everyone"
            if last_rules is not None:
                # The built-in rule has no state of its own: it is on while it exists.
                reach = _best(rule_reach({"State": "Enabled", **r}, domains) for r in last_rules)
            ordered.append(_entry(policy, family.last, reach, None))
    chosen: list[dict[str, Any]] = []
    everyone = False
    for entry in ordered:
        if entry["applies_to"] == "none":
            continue
        chosen.append(entry)
        if entry["applies_to"] == "everyone":
            everyone = True
            break
    # A rule of unknown priority may come before any of them: its policy is judged too.
    chosen += unordered
    everyone |= any(e["applies_to"] == "everyone" for e in unordered)
    return {"in_force": chosen, "everyone_covered": everyone, "policies": len(policies)}


def _linked(
    family: Family, rule: Mapping[str, Any], by_name: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """The policy an applying rule names; an error when it is not among the policies read, as
    someone then gets a policy nothing can be said of."""
    linked = by_name.get(str(rule.get(family.link) or "").lower())
    if linked is None:
        raise UnreadableShape(
            f"the rule {rule.get('Name') or rule.get('Identity')!r} applies {family.link} "
            f"{rule.get(family.link)!r}, which is not among the policies read"
        )
    return linked


def _preset_policies(
    family: Family,
    rule: Mapping[str, Any],
    tier: str,
    policies: list[dict[str, Any]],
    by_name: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The policies of this family an applying preset rule puts in force: the one it names
    (Get-EOPProtectionPolicyRule and Get-ATPProtectionPolicyRule name each, as custom rules
    do); for a rule that names none, the policies that say they are of its preset. None of
    either: the preset's recipients get a policy that was not read."""
    if not _empty(rule.get(family.link)):
        return [_linked(family, rule, by_name)]
    found = [p for p in policies if _preset(p) == tier and not _is_last(family, p)]
    if not found:
        raise UnreadableShape(
            f"the preset rule {rule.get('Name') or rule.get('Identity')!r} is on, but no "
            f"{tier} preset {family.link} is among the policies read"
        )
    return found


def _best(reaches: Iterable[str]) -> str:
    seen = set(reaches)
    for reach in ("everyone", "some"):
        if reach in seen:
            return reach
    return "none"


def accepted_domains(answer: list[dict[str, Any]] | None) -> set[str] | None:
    if answer is None:
        return None
    return {str(d["DomainName"]).lower() for d in answer if d.get("DomainName")}


# Members of Get-TransportRule that make a rule apply to fewer messages than its FromScope
# says: its Conditions list names each (…Tasks.<Name>Predicate), FromScope is the only one an
# external-sender warning needs.
_FROM_SCOPE = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.FromScopePredicate"


# Modes in which a rule takes no action (Set-TransportRule -Mode: Audit, AuditAndNotify), so it
# stops nothing either.
_TESTING = frozenset({"Audit", "AuditAndNotify"})


def transport_rules(rules: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """Every transport rule as the external-sender warning control reads it
    (transport_rule_facts), with whether it is in effect at `now` and which rules ahead of it
    stop the processing of the rest. A rule takes no action before its ActivationDate or after
    its ExpiryDate; one with StopRuleProcessing keeps every later rule from the messages it
    matches (Set-TransportRule), unless it is disabled or in a test mode, where it takes no
    action. A date that cannot be read, or a priority on either side that cannot, is taken the
    way that does not count the rule."""
    out = []
    for rule in rules:
        facts = transport_rule_facts(rule)
        facts["in_effect"] = _in_effect(rule, now)
        mine = priority(rule)
        facts["stopped_by"] = [
            str(other.get("Name") or other.get("Identity"))
            for other in rules
            if other is not rule
            and other.get("StopRuleProcessing") is not False
            and other.get("State") != "Disabled"
            and other.get("Mode") not in _TESTING
            and (mine is None or (theirs := priority(other)) is None or theirs < mine)
        ]
        out.append(facts)
    return out


def _in_effect(rule: Mapping[str, Any], now: dt.datetime) -> bool:
    for key, started in (("ActivationDate", True), ("ExpiryDate", False)):
        value = rule.get(key)
        if value in (None, ""):
            continue
        try:
            moment = parse_isoz(str(value))
        except ValueError:
            return False
        if (moment > now) if started else (moment <= now):
            return False
    return True


def transport_rule_facts(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A transport rule as the external-sender warning control reads it: state, mode, scope,
    what it prepends, and every condition and exception beyond the sender's location (a rule
    whose conditions cannot be read counts one unknown condition)."""
    conditions = rule.get("Conditions")
    if conditions is None:
        conditions = []
    if isinstance(conditions, list):
        others = [str(c).rsplit(".", 1)[-1] for c in conditions if c != _FROM_SCOPE]
    else:
        others = ["(unreadable Conditions)"]
    exceptions = rule.get("Exceptions")
    if isinstance(exceptions, list):
        excepts = [str(c).rsplit(".", 1)[-1] for c in exceptions]
    else:
        excepts = [] if exceptions is None else ["(unreadable Exceptions)"]
    return {
        "Name": rule.get("Name") or rule.get("Identity"),
        "State": rule.get("State"),
        "Mode": rule.get("Mode"),
        "FromScope": rule.get("FromScope"),
        "PrependSubject": rule.get("PrependSubject"),
        "other_conditions": others,
        "exceptions": excepts,
    }
