"""The responsibility matrix: one row per HIPAA Security Rule citation, saying what the rule
asks, whether it is required or addressable, which side answers it (the provider under its BAA,
the customer, or both), the controls that answer it with their statuses, and for provider rows
the agreement the inheritance rests on. Citations that no control answers are listed as such:
an auditor must see the gaps, not infer them."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from auditor.reports.common import (
    STATUS_LABELS,
    STATUS_URGENCY,
    ReportInput,
    safeguard_of,
)
from auditor.reports.csvcells import CsvWriter
from auditor.results import Result

KIND_LABELS = {
    "standard": "Standard",
    "required": "Required",
    "addressable": "Addressable",
    "proposed": "Proposed (NPRM)",
}
_SIDES = ("provider", "shared", "customer")


@dataclass(frozen=True)
class Citation:
    citation: str
    requirement: str
    kind: str


@cache
def reference() -> tuple[Citation, ...]:
    """The Security Rule's standards and implementation specifications (and the NPRM's
    proposals the catalog already cites), in the rule's order."""
    text = (
        resources.files("auditor.reference")
        .joinpath("hipaa-security-rule.json")
        .read_text(encoding="utf-8")
    )
    return tuple(Citation(**row) for row in json.loads(text)["citations"])


@dataclass
class ControlCell:
    control: str
    title: str
    responsibility: str
    status: str  # the most urgent status over its subjects
    subjects: int
    statuses: dict[str, int]

    @property
    def label(self) -> str:
        shown = STATUS_LABELS.get(self.status, self.status)
        if self.subjects > 1:
            return f"{shown} ({self.statuses.get(self.status, 0)} of {self.subjects})"
        return shown


@dataclass
class MatrixRow:
    citation: str
    requirement: str
    kind: str
    safeguard: str
    controls: list[ControlCell] = field(default_factory=list)
    inherited_evidence: list[str] = field(default_factory=list)

    @property
    def covered(self) -> bool:
        return bool(self.controls)

    @property
    def responsibility(self) -> str:
        sides = {c.responsibility for c in self.controls}
        return ", ".join(s for s in _SIDES if s in sides) or "not covered by any control"

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)


def _agreement_line(result: Result) -> str | None:
    for evidence in result.evidence:
        if evidence.pointer == "/agreement" and isinstance(evidence.value, dict):
            agreement: dict[str, Any] = evidence.value
            name = agreement.get("name") or agreement.get("vendor") or "agreement"
            signed = agreement.get("signed")
            document = agreement.get("document")
            text = f"{name} ({result.subject})"
            if signed:
                text += f", signed {signed}"
            if document:
                text += f", on file as {document}"
            return text
    return None


def canonical(citation: str) -> str:
    """The reference row a citation belongs to: a standard is cited both as `164.308(a)(5)` and,
    as the rule numbers its paragraph, `164.308(a)(5)(i)`."""
    known = {c.citation for c in reference()}
    if citation not in known and citation.endswith("(i)"):
        shorter = citation.removesuffix("(i)")
        if shorter in known:
            return shorter
    return citation


def rows(report: ReportInput) -> list[MatrixRow]:
    by_control: dict[str, list[Result]] = {}
    for result in report.results.results:
        by_control.setdefault(result.control, []).append(result)
    known = {c.citation for c in reference()}
    cited = {canonical(c) for results in by_control.values() for r in results for c in r.citations}
    extra = sorted(cited - known)
    table = [
        MatrixRow(c.citation, c.requirement, c.kind, safeguard_of(c.citation)) for c in reference()
    ] + [
        MatrixRow(c, "(cited by a control; not in the reference list)", "", safeguard_of(c))
        for c in extra
    ]
    index = {row.citation: row for row in table}
    for control, results in sorted(by_control.items()):
        statuses: dict[str, int] = {}
        for result in results:
            statuses[result.status] = statuses.get(result.status, 0) + 1
        first = results[0]
        cell = ControlCell(
            control=control,
            title=first.title,
            responsibility=first.responsibility,
            status=min(statuses, key=lambda s: STATUS_URGENCY.get(s, 9)),
            subjects=len(results),
            statuses=statuses,
        )
        for citation in dict.fromkeys(canonical(c) for r in results for c in r.citations):
            row = index[citation]
            row.controls.append(cell)
            for result in results:
                line = _agreement_line(result) if result.status == "inherited" else None
                if line and line not in row.inherited_evidence:
                    row.inherited_evidence.append(line)
    return table


def to_csv(table: list[MatrixRow]) -> str:
    """One line per citation; controls as `id: status` joined with semicolons."""
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.writerow(
        [
            "citation",
            "requirement",
            "required_or_addressable",
            "safeguard",
            "responsibility",
            "controls",
            "inherited_from",
        ]
    )
    for row in table:
        writer.writerow(
            [
                row.citation,
                row.requirement,
                row.kind_label,
                row.safeguard,
                row.responsibility,
                "; ".join(f"{c.control}: {c.label}" for c in row.controls),
                "; ".join(row.inherited_evidence),
            ]
        )
    return out.getvalue()
