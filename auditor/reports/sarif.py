"""results.sarif: SARIF 2.1.0 with one rule per control, for code-scanning dashboards."""

from __future__ import annotations

import hashlib
import re

from auditor import __version__
from auditor.jsonutil import JSON
from auditor.reports.common import ReportInput

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# A plain-text message may embed links, `[text](target)`; literal brackets (and the backslash
# that escapes them) are escaped (SARIF 2.1.0, 3.11.6), so a name cannot make one.
_LINK_SYNTAX = re.compile(r"[\\\[\]]")


def plain_message(text: str) -> str:
    return _LINK_SYNTAX.sub(r"\\\g<0>", text)


# What a category may hold: GitHub compares it as text, and it ends at the id's last `/`.
_UNSAFE_IN_CATEGORY = re.compile(r"[^A-Za-z0-9._@+:=-]+")
# Scope kinds, most specific first: a tenant or account names a run better than its regions.
_SCOPE_ORDER = ("tenants", "accounts", "organisations", "stacks", "domains")
_MAX_SCOPE = 100


def _level(status: str, severity: str) -> str:
    """An accepted waiver is a note, never an open error: code scanning closes a result whose
    suppression was accepted where it honours suppressions, and shows a note where not."""
    if status == "waived":
        return "note"
    if status == "error":
        return "warning"
    return _LEVEL.get(severity, "warning")


def category(report: ReportInput) -> str:
    """Code scanning's category for this run. GitHub's upload takes it from
    `automationDetails.id` (all before the last `/`) and closes the alerts of an earlier upload
    in the same category that this one lacks: so it names what was audited, and two tenants of
    one matrix never share one. A category the user gave is used as it is."""
    if report.sarif_category:
        parts = [_UNSAFE_IN_CATEGORY.sub("-", p) for p in report.sarif_category.split("/")]
        return "/".join(p for p in parts if p) or "commsaudit"
    names: list[str] = []
    for kind in _SCOPE_ORDER:
        value = report.scope.get(kind)
        if isinstance(value, list) and value:
            names = sorted(str(v) for v in value)
            break
    scope = _UNSAFE_IN_CATEGORY.sub("-", "+".join(names)).strip("-") or "unscoped"
    if len(scope) > _MAX_SCOPE:
        digest = hashlib.sha256(scope.encode()).hexdigest()[:12]
        scope = f"{scope[: _MAX_SCOPE - 13]}-{digest}"
    profile = _UNSAFE_IN_CATEGORY.sub("-", report.results.run.profile)
    return f"commsaudit/{profile}/{scope}"


def render(report: ReportInput) -> dict[str, JSON]:
    policies = list(report.policies)
    rule_index = {p.id: i for i, p in enumerate(policies)}
    rules = []
    for policy in policies:
        rules.append(
            {
                "id": policy.id,
                "name": "".join(w.capitalize() for w in policy.id.replace(".", "-").split("-")),
                "shortDescription": {"text": policy.title},
                "fullDescription": {"text": policy.rationale},
                "help": {
                    "text": policy.remediation_text,
                    "markdown": policy.remediation_summary
                    + "\n\n"
                    + "\n".join(f"{i}. {s}" for i, s in enumerate(policy.remediation_steps, 1)),
                },
                "defaultConfiguration": {"level": _LEVEL.get(policy.severity, "warning")},
                "properties": {
                    "tags": ["hipaa", policy.category, policy.platform, *policy.citations],
                    "severity": policy.severity,
                    "responsibility": policy.responsibility,
                    "citations": list(policy.citations),
                    "security-severity": {
                        "critical": "9.5",
                        "high": "8.0",
                        "medium": "5.5",
                        "low": "3.0",
                        "info": "1.0",
                    }.get(policy.severity, "5.0"),
                },
            }
        )
    sarif_results = []
    for result in report.results.results:
        if result.status not in ("fail", "error", "waived") or result.control not in rule_index:
            continue
        entry: dict[str, JSON] = {
            "ruleId": result.control,
            "ruleIndex": rule_index[result.control],
            "level": _level(result.status, result.severity),
            "kind": "fail" if result.status != "error" else "review",
            "message": {"text": plain_message(f"{result.subject}: {result.reason}")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": report.config_location.uri},
                        "region": {"startLine": report.config_location.line(result.platform)},
                    },
                    "logicalLocations": [{"name": result.subject, "kind": "resource"}],
                }
            ],
            "partialFingerprints": {"commsaudit/v1": f"{result.control}:{result.subject}"},
            "properties": {"status": result.status, "subject": result.subject},
        }
        if result.status == "waived" and result.waiver:
            entry["suppressions"] = [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": f"{result.waiver.get('reason')} (approved by "
                    f"{result.waiver.get('approved_by')}, until {result.waiver.get('expires')})",
                }
            ]
        sarif_results.append(entry)
    run = report.results.run
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "commsaudit",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": f"{category(report)}/{run.id}"},
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "startTimeUtc": run.started_at,
                        "endTimeUtc": run.finished_at,
                    }
                ],
                "results": sarif_results,
            }
        ],
    }
