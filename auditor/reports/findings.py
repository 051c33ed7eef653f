"""findings.csv: one row per result, for spreadsheets and GRC tools. Written beside the bundle
and inside it; every cell passes `csv_cell`, so a tenant's names cannot become formulas."""

from __future__ import annotations

import io

from auditor.reports.common import ReportInput
from auditor.reports.csvcells import CsvWriter

COLUMNS = (
    "control",
    "title",
    "subject",
    "platform",
    "status",
    "severity",
    "responsibility",
    "category",
    "citations",
    "reason",
    "evidence",
    "evidence_items",
    "waiver",
    "run_id",
)


def to_csv(report: ReportInput) -> str:
    """The results in results.json's order. `evidence` points into results.json (the result's
    evidence list, by JSON pointer); `waiver` is its reason, approver and expiry when waived."""
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.writerow(list(COLUMNS))
    run_id = report.results.run.id
    for index, result in enumerate(report.results.results):
        waiver = result.waiver or {}
        writer.writerow(
            [
                result.control,
                result.title,
                result.subject,
                result.platform,
                result.status,
                result.severity,
                result.responsibility,
                result.category,
                "; ".join(result.citations),
                result.reason,
                f"results.json#/results/{index}/evidence",
                str(len(result.evidence)),
                (
                    f"{waiver.get('reason', '')} (approved by {waiver.get('approved_by', '')}, "
                    f"until {waiver.get('expires', '')})"
                    if waiver
                    else ""
                ),
                run_id,
            ]
        )
    return out.getvalue()
