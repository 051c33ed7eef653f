"""report.html: self-contained (no scripts, no external resources), printable, and safe: every
piece of tenant-supplied text goes through Jinja2's autoescaping."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from typing import Any

import jinja2

from auditor.reports import matrix
from auditor.reports.common import (
    STATUS_LABELS,
    ReportInput,
    attention,
    by_platform,
    by_safeguard,
    by_scuba_baseline,
    cited,
    counts,
    ordered,
)
from auditor.results import STATUSES, Evidence

_EVIDENCE_SHOWN = 25


# Control characters but tab and line breaks: HTML has no use for them, and a NUL or an escape
# sequence in a name should not reach a page (or a terminal that `cat`s it).
_CONTROL = {
    code: "\ufffd" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\t\n\r"
}


def _printable(value: Any) -> Any:
    """Every value a template prints, before it is escaped. `translate` keeps Markup (escaped
    already, by a filter such as `join`) as Markup."""
    return value.translate(_CONTROL) if isinstance(value, str) else value


_TEMPLATE = "report.html.j2"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("auditor.reports", "templates"),
        autoescape=True,  # all templates: tenant names, reasons and values are untrusted text
        finalize=_printable,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def prepare() -> None:
    """Compile the report's template now (a twentieth of a second of jinja2's parser and
    compiler): an audit calls this from a thread while its collection waits on the network.
    A template that does not compile fails where it is rendered, with its error, not here."""
    with contextlib.suppress(Exception):
        _environment().get_template(_TEMPLATE)


def _value_text(evidence: Evidence) -> str:
    text = json.dumps(evidence.value, ensure_ascii=False, indent=1, sort_keys=True)
    return text if len(text) <= 1500 else text[:1499] + "…"


def _scope_lines(scope: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("organisations", "tenants", "accounts", "regions", "domains", "stacks"):
        values = scope.get(key) or []
        if values:
            lines.append(f"{key}: {', '.join(map(str, values))}")
    return lines


def _ran_by_line(who: dict[str, Any]) -> str:
    if not who:
        return ""
    ci = who.get("ci") or {}
    if ci.get("provider") == "github-actions":
        return (
            f"GitHub Actions, {ci.get('repository')} workflow {ci.get('workflow')} "
            f"run {ci.get('run_id')} at {ci.get('commit')}"
        )
    return f"{who.get('user')} on {who.get('host')}"


def render(report: ReportInput) -> str:
    results = report.results.results
    findings = []
    for i, result in enumerate(attention(results)):
        policy = report.policy(result)
        findings.append(
            {
                "result": result,
                "anchor": f"finding-{i + 1}",
                "rationale": policy.rationale if policy else "",
                "evidence": [
                    {
                        "source": e.source,
                        "section": e.section,
                        "pointer": e.pointer,
                        "value_text": _value_text(e),
                        "message": e.message,
                        "collected_at": e.collected_at,
                        "raw": e.raw,
                    }
                    for e in result.evidence[:_EVIDENCE_SHOWN]
                ],
                "more_evidence": max(0, len(result.evidence) - _EVIDENCE_SHOWN),
                "remediation_summary": policy.remediation_summary if policy else "",
                "remediation_steps": list(policy.remediation_steps)
                if policy and result.status in ("fail", "waived")
                else [],
                "references": list(policy.remediation_references) if policy else [],
            }
        )
    table = matrix.rows(report)
    # The scuba profile is read by SCuBA baseline (Entra ID, Exchange Online ...); the others
    # by platform.
    grouped = (
        by_scuba_baseline(ordered(results))
        if report.results.run.profile == "scuba"
        else by_platform(ordered(results))
    )
    all_by_platform = [
        (heading, sorted(group, key=lambda r: (r.control, r.subject)))
        for heading, group in grouped.items()
    ]
    return (
        _environment()
        .get_template(_TEMPLATE)
        .render(
            title=report.title,
            run=report.results.run,
            bundle_name=report.bundle_name,
            scope_lines=_scope_lines(report.scope),
            ran_by_line=_ran_by_line(report.ran_by),
            statuses=STATUSES,
            labels=STATUS_LABELS,
            tally=counts(results),
            safeguards=[(t, counts(g)) for t, g in by_safeguard(results).items()],
            platforms=[(t, counts(g)) for t, g in by_platform(results).items()],
            findings=findings,
            matrix=table,
            uncovered=sum(1 for row in table if not row.covered),
            all_by_platform=all_by_platform,
            cited=cited,
            warnings=report.results.run.warnings,
        )
    )
