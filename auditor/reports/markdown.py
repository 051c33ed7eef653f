"""report.md: the summary people read first (and CI job summaries show)."""

from __future__ import annotations

import json

from auditor.diff import render_markdown
from auditor.reports import matrix
from auditor.reports.common import (
    STATUS_LABELS,
    ReportInput,
    attention,
    by_safeguard,
    counts,
    group_by,
    md_cell,
    md_code,
    ordered,
)
from auditor.results import STATUSES, Evidence

_EVIDENCE_SHOWN = 10


def _inline(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 200:
        text = text[:199] + "…"
    return md_code(text)


def _evidence_line(e: Evidence) -> str:
    where = f"{e.section}{e.pointer}" if e.pointer else e.section
    line = f"  - {md_code(e.source)} → {md_code(where)} = {_inline(e.value)}"
    if e.message:
        line += f" — {md_cell(e.message)}"
    return line


def _matrix(report: ReportInput) -> list[str]:
    table = matrix.rows(report)
    uncovered = sum(1 for row in table if not row.covered)
    out = ["## Responsibility matrix", ""]
    out.append(
        f"One row per HIPAA Security Rule citation. {uncovered} of {len(table)} are answered by "
        "no control in this run and need other evidence. Also in `matrix.csv`."
    )
    out.append("")
    out.append("| Citation | Requirement | Kind | Responsibility | Controls | Inherited from |")
    out.append("|---|---|---|---|---|---|")
    for row in table:
        controls = "<br>".join(
            f"{md_code(c.control, in_table=True)} {md_cell(c.label)}" for c in row.controls
        )
        out.append(
            f"| {md_cell(row.citation)} | {md_cell(row.requirement)} | {md_cell(row.kind_label)} | "
            f"{md_cell(row.responsibility)} | {controls or '—'} | "
            f"{md_cell('; '.join(row.inherited_evidence)) or ''} |"
        )
    out.append("")
    return out


def render(report: ReportInput) -> str:
    results = report.results.results
    run = report.results.run
    tally = counts(results)
    out = [f"# {md_cell(report.title)}", ""]
    out.append(
        f"Run {md_code(run.id)} · profile {md_code(run.profile)} · started {run.started_at} · "
        f"commsaudit {run.tool_version}"
    )
    out.append("")
    out.append("| " + " | ".join(STATUS_LABELS[s] for s in STATUSES) + " |")
    out.append("|" + "---:|" * len(STATUSES))
    out.append("| " + " | ".join(str(tally[s]) for s in STATUSES) + " |")
    out.append("")

    out.append("## By HIPAA safeguard")
    out.append("")
    out.append("| Safeguard | " + " | ".join(STATUS_LABELS[s] for s in STATUSES) + " |")
    out.append("|---|" + "---:|" * len(STATUSES))
    for title, group in by_safeguard(results).items():
        c = counts(group)
        out.append(f"| {title} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    out.append("")

    if report.diff is not None:
        out.extend(render_markdown(report.diff))
    out.extend(_matrix(report))

    findings = attention(results)
    out.append("## Needs attention")
    out.append("")
    if not findings:
        out.append("Nothing failed, errored or was waived.")
    for result in findings:
        policy = report.policy(result)
        out.append(
            f"### {STATUS_LABELS[result.status]}: {md_code(result.control)} — "
            f"{md_cell(result.subject)}"
        )
        out.append("")
        out.append(
            f"**{md_cell(result.title)}** · severity {md_cell(result.severity)} · "
            f"{md_cell(result.responsibility)} responsibility · "
            f"{md_cell(', '.join(result.citations))}"
        )
        out.append("")
        out.append(md_cell(result.reason))
        out.append("")
        if result.evidence:
            out.append("Evidence:")
            out.extend(_evidence_line(e) for e in result.evidence[:_EVIDENCE_SHOWN])
            if len(result.evidence) > _EVIDENCE_SHOWN:
                out.append(
                    f"  - … and {len(result.evidence) - _EVIDENCE_SHOWN} more in results.json"
                )
            out.append("")
        if result.status in ("fail", "waived") and policy is not None:
            out.append(f"Remediation: {md_cell(policy.remediation_summary)}")
            out.append("")
            out.extend(
                f"{i}. {md_cell(step)}" for i, step in enumerate(policy.remediation_steps, 1)
            )
            out.append("")
            for reference in policy.remediation_references:
                out.append(f"Reference: <{reference}>")
                out.append("")

    out.append("## All results")
    out.append("")
    for platform, group in group_by(ordered(results), "platform").items():
        out.append(f"### {md_cell(platform)}")
        out.append("")
        out.append("| Status | Control | Subject | Severity | Citations |")
        out.append("|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: (r.control, r.subject)):
            citations = md_cell(", ".join(r.citations))
            out.append(
                f"| {STATUS_LABELS[r.status]} | {md_code(r.control, in_table=True)} | "
                f"{md_cell(r.subject)} | {md_cell(r.severity)} | {citations} |"
            )
        out.append("")
    if run.warnings:
        out.append("## Warnings")
        out.append("")
        out.extend(f"- {md_cell(w)}" for w in run.warnings)
        out.append("")
    return "\n".join(out)
