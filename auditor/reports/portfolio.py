"""The portfolio report: several bundles (an MSP's customers, or one matrix job per tenant) in
one view. Each bundle is checked for integrity first; the report shows each run's scope and
counts, then every failure across them, most severe first."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from auditor.evidence.verify import verify_bundle
from auditor.model.errors import InputError
from auditor.reports.common import STATUS_LABELS, md_cell
from auditor.results import SEVERITIES, STATUSES, Result, Results

_NAMES = ("organisations", "tenants", "accounts", "domains", "stacks")


@dataclass
class Entry:
    bundle: str
    run_id: str
    started_at: str
    profile: str
    scope: dict[str, Any]
    counts: dict[str, int]
    failures: list[Result]
    signature: str

    @property
    def names(self) -> str:
        found = [str(n) for key in _NAMES for n in self.scope.get(key) or []]
        return ", ".join(found) or "(no subjects)"


def read_entry(path: Path) -> Entry:
    report = verify_bundle(path, reevaluate=False)
    if not report.ok:
        raise InputError(
            f"the bundle does not verify ({report.problems[0].line()}); leave it out, or "
            "find out who changed it",
            where=str(path),
        )
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        results = Results.from_json(json.loads(archive.read("results.json")))
    return Entry(
        bundle=path.name,
        run_id=results.run.id,
        started_at=results.run.started_at,
        profile=results.run.profile,
        scope=dict(manifest.get("scope") or {}),
        counts=results.summary,
        failures=[r for r in results.results if r.status in ("fail", "error")],
        signature=report.signature,
    )


def _rank(result: Result) -> tuple[int, int, str, str]:
    severity = SEVERITIES.index(result.severity) if result.severity in SEVERITIES else 9
    return (0 if result.status == "fail" else 1, severity, result.control, result.subject)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("auditor.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _context(entries: list[Entry]) -> dict[str, Any]:
    totals = {s: sum(e.counts[s] for e in entries) for s in STATUSES}
    failures = sorted(
        ((f, e) for e in entries for f in e.failures), key=lambda pair: _rank(pair[0])
    )
    return {
        "entries": entries,
        "totals": totals,
        "statuses": STATUSES,
        "labels": STATUS_LABELS,
        "failures": failures,
    }


def render_html(entries: list[Entry]) -> str:
    return _environment().get_template("portfolio.html.j2").render(**_context(entries))


def render_markdown(entries: list[Entry]) -> str:
    context = _context(entries)
    out = ["# commsaudit portfolio", ""]
    out.append(f"{len(entries)} run(s).")
    out.append("")
    out.append(
        "| Bundle | Scope | Started | " + " | ".join(STATUS_LABELS[s] for s in STATUSES) + " |"
    )
    out.append("|---|---|---|" + "---:|" * len(STATUSES))
    for e in entries:
        out.append(
            f"| `{e.bundle}` | {md_cell(e.names)} | {e.started_at} | "
            + " | ".join(str(e.counts[s]) for s in STATUSES)
            + " |"
        )
    totals = context["totals"]
    out.append("| **all** | | | " + " | ".join(str(totals[s]) for s in STATUSES) + " |")
    out.append("")
    out.append("## Failures and errors across the portfolio")
    out.append("")
    if not context["failures"]:
        out.append("Nothing failed or errored.")
    else:
        out.append("| Status | Severity | Control | Subject | Bundle |")
        out.append("|---|---|---|---|---|")
        for result, entry in context["failures"]:
            out.append(
                f"| {STATUS_LABELS[result.status]} | {result.severity} | `{result.control}` | "
                f"{md_cell(result.subject)} | `{entry.bundle}` |"
            )
    out.append("")
    return "\n".join(out)
