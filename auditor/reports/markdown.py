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
    cited,
    counts,
    group_by,
    md_cell,
    md_code,
    ordered,
)
from auditor.results import STATUSES, Evidence, Result

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


def _matrix(table: list[matrix.MatrixRow]) -> list[str]:
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


# GitHub's job summary holds at most 1 MiB; what the action adds after the report fits in the rest.
SUMMARY_LIMIT = 1_000_000
_CUT = (
    "_Cut to fit a job summary: the rest is in `report.html` and `results.json`, in the "
    "evidence bundle (the workflow's artifact)._"
)


def _head(report: ReportInput) -> list[str]:
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
    return out


def _finding(report: ReportInput, result: Result, *, evidence: bool) -> list[str]:
    policy = report.policy(result)
    out = [
        f"### {STATUS_LABELS[result.status]}: {md_code(result.control)} — "
        f"{md_cell(result.subject)}",
        "",
        f"**{md_cell(result.title)}** · severity {md_cell(result.severity)} · "
        f"{md_cell(result.responsibility)} responsibility · "
        f"{md_cell(cited(result))}",
        "",
        md_cell(result.reason),
        "",
    ]
    if result.evidence and evidence:
        out.append("Evidence:")
        out.extend(_evidence_line(e) for e in result.evidence[:_EVIDENCE_SHOWN])
        if len(result.evidence) > _EVIDENCE_SHOWN:
            out.append(f"  - … and {len(result.evidence) - _EVIDENCE_SHOWN} more in results.json")
        out.append("")
    elif result.evidence:
        out.extend([f"Evidence: {len(result.evidence)} item(s) in results.json.", ""])
    if result.status in ("fail", "waived") and policy is not None:
        out.extend([f"Remediation: {md_cell(policy.remediation_summary)}", ""])
        out.extend(f"{i}. {md_cell(step)}" for i, step in enumerate(policy.remediation_steps, 1))
        out.append("")
        for reference in policy.remediation_references:
            out.extend([f"Reference: <{reference}>", ""])
    return out


_FINDING_HEADINGS = {
    "fail": "## Failures",
    "error": "## Errors: controls that could not be judged",
    "waived": "## Waived failures",
}


def _findings(report: ReportInput, *, evidence: bool, statuses: tuple[str, ...]) -> list[str]:
    """Failures (most severe first), then errors, then waived failures."""
    needing = attention(report.results.results)
    found = [r for r in needing if r.status in statuses]
    if not needing and "fail" in statuses:
        return ["## Failures", "", "Nothing failed, errored or was waived.", ""]
    out: list[str] = []
    for status, group in group_by(found, "status").items():
        out.extend([_FINDING_HEADINGS[status], ""])
        for result in group:
            out.extend(_finding(report, result, evidence=evidence))
    return out


def _safeguards(report: ReportInput) -> list[str]:
    out = ["## By HIPAA safeguard", ""]
    out.append("| Safeguard | " + " | ".join(STATUS_LABELS[s] for s in STATUSES) + " |")
    out.append("|---|" + "---:|" * len(STATUSES))
    for title, group in by_safeguard(report.results.results).items():
        c = counts(group)
        out.append(f"| {title} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    out.append("")
    return out


def _collapsed(summary: str, lines: list[str]) -> list[str]:
    """`lines` behind a `<details>` toggle (GitHub renders the Markdown inside it)."""
    return ["<details>", f"<summary>{summary}</summary>", "", *lines, "</details>", ""]


def _all_results(report: ReportInput) -> list[str]:
    out: list[str] = []
    for platform, group in group_by(ordered(report.results.results), "platform").items():
        out.append(f"### {md_cell(platform)}")
        out.append("")
        out.append("| Status | Control | Subject | Severity | Citations |")
        out.append("|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: (r.control, r.subject)):
            citations = md_cell(cited(r))
            out.append(
                f"| {STATUS_LABELS[r.status]} | {md_code(r.control, in_table=True)} | "
                f"{md_cell(r.subject)} | {md_cell(r.severity)} | {citations} |"
            )
        out.append("")
    return out


def render(report: ReportInput, limit: int = SUMMARY_LIMIT) -> str:
    """What needs a person first: failures (most severe first), then errors and waived ones,
    what changed since the baseline and the run's warnings; then, collapsed, the responsibility
    matrix and every result. Over `limit` bytes, the least important parts go first: every
    result, the matrix, the safeguard table, the evidence under each finding, the waived
    findings; then the findings are cut after the last whole one that fits."""
    run = report.results.run
    warnings = ["## Warnings", "", *(f"- {md_cell(w)}" for w in run.warnings), ""]
    changes = render_markdown(report.diff) if report.diff is not None else []
    total = len(report.results.results)
    table = matrix.rows(report)
    parts = {
        "findings": _findings(report, evidence=True, statuses=("fail", "error")),
        "waived": _findings(report, evidence=True, statuses=("waived",)),
        "changes": changes,
        "warnings": warnings if run.warnings else [],
        "safeguards": _safeguards(report),
        "matrix": _collapsed(f"Responsibility matrix ({len(table)} citations)", _matrix(table)),
        "results": _collapsed(f"All results ({total})", _all_results(report)),
    }  # fmt: skip
    cuts: list[tuple[str, list[str]]] = [
        ("results", []),
        ("matrix", []),
        ("safeguards", []),
        ("findings", _findings(report, evidence=False, statuses=("fail", "error"))),
        ("waived", []),
    ]
    head = _head(report)
    order = ("findings", "waived", "changes", "warnings", "safeguards", "matrix", "results")

    def text(cut: bool) -> str:
        body = [line for name in order for line in parts[name]]
        return "\n".join([*head, *([_CUT, ""] if cut else []), *body])

    rendered = text(cut=False)
    for name, replacement in cuts:
        if len(rendered.encode()) <= limit:
            return rendered
        parts[name] = replacement
        rendered = text(cut=True)
    if len(rendered.encode()) <= limit:
        return rendered
    return _cut_findings(rendered, limit)


def _cut_findings(rendered: str, limit: int) -> str:
    """`rendered` cut after the last whole finding (a `### ` block) within `limit` bytes."""
    data = rendered.encode()[: limit - 200]
    kept = data.decode(errors="ignore")
    end = kept.rfind("\n### ")
    kept = kept[:end] if end > 0 else kept[: kept.rfind("\n")]
    return kept + "\n\n" + _CUT + "\n"
