"""Purview compliance policies as facts: which workloads a DLP or retention policy covers in full,
what limits it, and which sensitive information types a DLP rule detects.

A policy's location of `All` covers a workload only while no exception or scoping parameter of
that workload holds a value: `ExchangeSenderException`, `OneDriveSharedBy`, adaptive scopes, and
any parameter of the workload this code does not know. An unknown parameter narrows; it never
widens coverage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auditor.jsonutil import loads_strict


class UnreadableShape(Exception):
    """An answer whose shape this code does not understand: the section it feeds is `error`,
    with this message naming the part that could not be read."""


def unwrap_pairs(value: Any) -> Any:
    """PowerShell hashtables as the admin REST API sends them, lists of `{"_key", "_value"}`
    pairs (nested as deep as the hashtable is), turned into objects; anything else as it is."""
    if isinstance(value, list):
        if value and all(_is_pair(item) for item in value):
            return {str(item["_key"]): unwrap_pairs(item.get("_value")) for item in value}
        return [unwrap_pairs(item) for item in value]
    if isinstance(value, dict):
        return {k: unwrap_pairs(v) for k, v in value.items()}
    return value


def _is_pair(item: Any) -> bool:
    return isinstance(item, dict) and "_key" in item and set(item) <= {"_key", "_value"}


def _field(node: Mapping[str, Any], name: str) -> Any:
    """A hashtable key, read as PowerShell does: without regard to case."""
    for key, value in node.items():
        if key.lower() == name:
            return value
    return None


def _types_of(value: Any, where: str) -> list[str]:
    """Sensitive information type names in a ContentContainsSensitiveInformation value: a list of
    types (`{name, minCount, …}`) and of groups (`{operator, groups: [{name, sensitivetypes}]}`)."""
    found: list[str] = []
    entries = unwrap_pairs(value)
    if isinstance(entries, Mapping):
        entries = [entries]
    if not isinstance(entries, list):
        raise UnreadableShape(f"{where} is {type(entries).__name__}, not a list of types")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise UnreadableShape(f"{where} holds a {type(entry).__name__}, not a type or group")
        name = _field(entry, "name")
        groups = _field(entry, "groups")
        types = _field(entry, "sensitivetypes")
        if groups is not None:
            found += _types_of(groups, f"{where}.groups")
        if types is not None:
            found += _types_of(types, f"{where}.sensitivetypes")
        elif groups is None:
            if not isinstance(name, str):
                raise UnreadableShape(f"{where} holds an entry with neither a name nor groups")
            found.append(name)
    return found


def _advanced_types(node: Any, negated: bool, where: str) -> list[str]:
    """Types under ContentContainsSensitiveInformation conditions of an AdvancedRule tree that
    are not under an odd number of `Not` operators. An operator other than And, Or or Not says
    nothing this code can vouch for: what is under it does not count."""
    if isinstance(node, list):
        return [t for item in node for t in _advanced_types(item, negated, where)]
    if not isinstance(node, Mapping):
        return []
    found: list[str] = []
    operator = _field(node, "operator")
    subconditions = _field(node, "subconditions")
    if subconditions is not None:
        kind = str(operator or "And").lower()
        if kind == "not":
            found += _advanced_types(subconditions, not negated, where)
        elif kind in ("and", "or"):
            found += _advanced_types(subconditions, negated, where)
    condition = _field(node, "conditionname")
    if isinstance(condition, str) and condition.lower() == "contentcontainssensitiveinformation":
        types = _types_of(_field(node, "value"), f"{where} ContentContainsSensitiveInformation")
        if not negated:
            found += types
    nested = _field(node, "condition")
    if nested is not None:
        found += _advanced_types(nested, negated, where)
    return found


# A comma before a closing bracket, outside strings: the published AdvancedRule example
# (New-DlpComplianceRule, Example 3) has one, though what Get returns is strict JSON.
_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[\]}])')


def _json_leniently(text: str, where: str) -> Any:
    try:
        return loads_strict(text)
    except json.JSONDecodeError:
        pass
    relaxed = _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)
    try:
        return loads_strict(relaxed)
    except json.JSONDecodeError as exc:
        raise UnreadableShape(f"{where} is not JSON: {exc.msg}") from None


def sensitive_types(rule: Mapping[str, Any]) -> list[str]:
    """Names of the sensitive information types a DLP rule detects: from the classic parameter
    (a list of types, or of groups, as objects or as key/value pairs) and from the AdvancedRule
    JSON of newer rules, where a type under `Not` excludes content instead of detecting it."""
    name = rule.get("Name")
    where = f"rule {name!r}"
    found: list[str] = []
    classic = rule.get("ContentContainsSensitiveInformation")
    if classic:
        found += _types_of(classic, f"{where} ContentContainsSensitiveInformation")
    advanced = rule.get("AdvancedRule")
    if isinstance(advanced, str) and advanced.strip():
        tree = _json_leniently(advanced, f"{where} AdvancedRule")
        found += _advanced_types(tree, False, f"{where} AdvancedRule")
    elif advanced not in (None, ""):
        raise UnreadableShape(f"{where} AdvancedRule is {type(advanced).__name__}, not text")
    return sorted(set(found))


# Members of a DLP rule that do not narrow the content it acts on: what names and places it,
# what it does on a match and how it reports (the 221-member Get-DlpComplianceRule object of
# cisagov/ScubaGear's Sample-Reports/ProviderSettingsExport.json @ 4d34e9a; New-DlpComplianceRule
# describes each). Every other member that holds a value is a condition or an exception, and
# narrows: one this code does not know included.
_DLP_RULE_NEUTRAL = frozenset(
    {
        # identity, placement, state
        "Identity", "Id", "Name", "DisplayName", "Guid", "ImmutableId", "ExchangeObjectId",
        "DistinguishedName", "ParentPolicyName", "Policy", "Priority", "Workload", "Comment",
        "Disabled", "Mode", "ReadOnly", "IsValid", "ObjectVersion", "ObjectState",
        "ObjectCategory", "ObjectClass", "ExchangeVersion", "OrganizationalUnitRoot",
        "OrganizationId", "OriginatingServer", "IsObjectUnderSystemOperation",
        "IsSummarizedPsRule", "CreatedBy", "LastModifiedBy", "WhenChanged", "WhenCreated",
        "WhenChangedUTC", "WhenCreatedUTC", "ExternalIdentity", "ExternalScenarioDependancies",
        "ErrorMetadata", "RuleXml", "RuleErrorAction", "SourceType", "StorageBindings",
        "ExecutionRuleGuids", "AdvancedRuleBuilderContext", "MaximumBlobRuleLength",
        "EvaluateRulePerComponent", "ReportSeverityLevel",
        # the detection itself (read by sensitive_types and _advanced_limits)
        "ContentContainsSensitiveInformation", "AdvancedRule", "IsAdvancedRule",
        # actions and reporting
        "BlockAccess", "BlockAccessScope", "EncryptRMSTemplate", "RemoveRMSTemplate",
        "EnforcePortalAccess", "ApplyBrandingTemplate", "EndpointDlpRestrictions",
        "EndpointDlpBrowserRestrictions", "ThirdPartyAppDlpRestrictions",
        "OnPremisesScannerDlpRestrictions", "PowerBIDlpRestrictions", "AlertProperties",
        "GenerateAlert", "GenerateIncidentReport", "IncidentReportContent", "RemoveHeader",
        "SetHeader", "StopPolicyProcessing", "AddRecipients", "Moderate", "ModifySubject",
        "MapRecipients", "RedirectMessageTo", "PrependSubject", "ApplyHtmlDisclaimer",
        "Quarantine", "TriggerPowerAutomateFlow", "BlockDomainsOrUsers", "BlockDomains",
        "BlockDomainsExcept", "BlockUsers", "BlockUsersExcept", "RestrictAccess",
        "SPMoveToQuarantineLocation", "MipRestrictAccess", "RestrictWebGrounding",
        "RedactSensitiveInfo", "RestrictBrowserAccess",
        # a modifier of sender conditions: alone it selects nothing
        "SenderAddressLocation",
    }
)  # fmt: skip
# Content shared with people outside the organisation: the scope of a rule that keeps PHI from
# leaving it (AccessScope: InOrganization, NotInOrganization or None).
_OUTWARD_SCOPES = frozenset({"notinorganization", "none"})


def dlp_rule_limits(rule: Mapping[str, Any]) -> list[str]:
    """The conditions and exceptions that narrow what a DLP rule acts on, beyond the sensitive
    information it detects and an outward access scope: every member outside the known neutral
    ones that holds a value, and in an AdvancedRule every condition but those two, anything
    under `Not` and any operator other than And, Or and Not."""
    limits = {
        key
        for key, value in rule.items()
        if "@" not in key
        and key not in _DLP_RULE_NEUTRAL
        and not key.startswith("Notify")
        and _holds_value(value)
        and not (key == "AccessScope" and str(value).lower() in _OUTWARD_SCOPES)
    }
    advanced = rule.get("AdvancedRule")
    if isinstance(advanced, str) and advanced.strip():
        where = f"rule {rule.get('Name')!r} AdvancedRule"
        limits.update(_advanced_limits(_json_leniently(advanced, where), False))
    return sorted(limits)


def _advanced_limits(node: Any, negated: bool) -> set[str]:
    if isinstance(node, list):
        return {limit for item in node for limit in _advanced_limits(item, negated)}
    if not isinstance(node, Mapping):
        return set()
    found: set[str] = set()
    subconditions = _field(node, "subconditions")
    if subconditions is not None:
        kind = str(_field(node, "operator") or "And").lower()
        if kind in ("and", "or", "not"):
            found |= _advanced_limits(subconditions, negated ^ (kind == "not"))
        else:
            found.add(f"AdvancedRule operator {kind}")
    condition = _field(node, "conditionname")
    if isinstance(condition, str):
        name = condition.lower()
        outward = name == "accessscope" and str(_field(node, "value")).lower() in _OUTWARD_SCOPES
        if negated:
            found.add(f"AdvancedRule Not {condition}")
        elif name != "contentcontainssensitiveinformation" and not outward:
            found.add(f"AdvancedRule {condition}")
    nested = _field(node, "condition")
    if nested is not None:
        found |= _advanced_limits(nested, negated)
    return found


@dataclass(frozen=True)
class Workload:
    """One workload of a compliance policy: its location parameter, and the prefixes of the
    parameters that scope it (the location itself and `neutral` ones aside)."""

    key: str
    location: str
    prefixes: tuple[str, ...]
    neutral: frozenset[str] = frozenset()


def _holds_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return value not in (None, "", [], {}) and not (
        isinstance(value, list) and all(v in (None, "") for v in value)
    )


def covers_all(policy: Mapping[str, Any], key: str) -> bool:
    """Whether a location parameter is `All`, as a string or a location object."""
    value = policy.get(key)
    items = value if isinstance(value, list) else [value] if value else []
    for item in items:
        name = (
            item
            if isinstance(item, str)
            else (_field(item, "name") or _field(item, "displayname"))
            if isinstance(item, Mapping)
            else None
        )
        if isinstance(name, str) and name.lower() == "all":
            return True
    return False


def location_facts(
    policy: Mapping[str, Any], workloads: Iterable[Workload], policy_wide: Iterable[str]
) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """({"<workload>_all": covered in full}, {"<workload>": [the parameters that limit it]}).

    `policy_wide` names parameters that limit every workload (administrative units, adaptive
    scopes of the whole policy)."""
    wide = sorted(k for k in policy_wide if _holds_value(policy.get(k)))
    covered: dict[str, bool] = {}
    limits: dict[str, list[str]] = {}
    for workload in workloads:
        own = sorted(
            k
            for k, v in policy.items()
            if "@" not in k
            and k.startswith(workload.prefixes)
            and k != workload.location
            and k not in workload.neutral
            and _holds_value(v)
        )
        limits[workload.key] = wide + own
        covered[f"{workload.key}_all"] = covers_all(policy, workload.location) and not (wide or own)
    return covered, limits
