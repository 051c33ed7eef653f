"""What every report needs: the results, the policies behind them, and ways to group them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.jsonutil import JSON
from auditor.policy import PLATFORM_TITLES, SAFEGUARDS, Policy, PolicySet
from auditor.results import SEVERITIES, STATUSES, Result, Results

if TYPE_CHECKING:
    from auditor.diff import Diff

STATUS_LABELS = {
    "pass": "Pass",
    "fail": "Fail",
    "error": "Error",
    "not_applicable": "Not applicable",
    "waived": "Waived",
    "inherited": "Inherited",
}
# Most urgent first: the order findings are listed in.
STATUS_URGENCY = {
    "fail": 0,
    "error": 1,
    "waived": 2,
    "pass": 3,
    "inherited": 4,
    "not_applicable": 5,
}


@dataclass
class ReportInput:
    results: Results
    policies: PolicySet
    scope: dict[str, JSON] = field(default_factory=dict)
    ran_by: dict[str, JSON] = field(default_factory=dict)
    bundle_name: str | None = None
    # What changed since a baseline run (audit --baseline), when there is one.
    diff: Diff | None = None

    def policy(self, result: Result) -> Policy | None:
        return self.policies.policies.get(result.control)

    @property
    def title(self) -> str:
        organisations = self.scope.get("organisations") or []
        tenants = self.scope.get("tenants") or []
        names = organisations or tenants
        if isinstance(names, list) and names:
            return f"commsaudit report: {', '.join(map(str, names))}"
        return "commsaudit report"


def ordered(results: list[Result]) -> list[Result]:
    return sorted(
        results,
        key=lambda r: (
            STATUS_URGENCY.get(r.status, 9),
            SEVERITIES.index(r.severity) if r.severity in SEVERITIES else 9,
            r.control,
            r.subject,
        ),
    )


def counts(results: list[Result]) -> dict[str, int]:
    tally = Counter(r.status for r in results)
    return {status: tally.get(status, 0) for status in STATUSES}


def group_by(results: list[Result], key: str) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(str(getattr(result, key)), []).append(result)
    return dict(sorted(groups.items()))


def safeguard_of(citation: str) -> str:
    return SAFEGUARDS.get(citation.removeprefix("NPRM ")[:7], "Other")


def by_safeguard(results: list[Result]) -> dict[str, list[Result]]:
    """Safeguard title -> results citing it (a result citing two safeguards is in both)."""
    groups: dict[str, list[Result]] = {title: [] for title in SAFEGUARDS.values()}
    for result in results:
        seen = set()
        for citation in result.citations:
            title = safeguard_of(citation)
            if title not in seen:
                groups.setdefault(title, []).append(result)
                seen.add(title)
    return {k: v for k, v in groups.items() if v}


def by_platform(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(PLATFORM_TITLES.get(result.platform, result.platform), []).append(result)
    return groups


def attention(results: list[Result]) -> list[Result]:
    """Results a person must act on or read: failures, errors and waivers."""
    return ordered([r for r in results if r.status in ("fail", "error", "waived")])


def md_cell(text: str) -> str:
    """A Markdown table cell: one line, no pipes or markup that could break the table or
    inject HTML."""
    escaped = (
        text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    )
    return " ".join(escaped.split())
