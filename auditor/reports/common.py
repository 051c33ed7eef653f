"""What every report needs: the results, the policies behind them, and ways to group them."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.jsonutil import JSON
from auditor.policy import PLATFORM_TITLES, SAFEGUARDS, Policy, PolicySet, scuba_baselines
from auditor.reports.location import ConfigLocation
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
    # results.sarif's code-scanning category, when the user named one.
    sarif_category: str | None = None
    # Seconds spent judging each (control, subject), when this run judged them (not when a
    # report is rendered again from a bundle).
    durations: dict[tuple[str, str], float] = field(default_factory=dict)
    # The config file in the repository that ran the audit, for code scanning's locations.
    config_location: ConfigLocation = field(default_factory=ConfigLocation)

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


def cited(result: Result) -> str:
    """The result's HIPAA citations, then the CISA SCuBA baseline policies it evaluates."""
    parts = [", ".join(result.citations)]
    if result.scuba:
        parts.append("SCuBA " + ", ".join(result.scuba))
    return "; ".join(p for p in parts if p)


def by_scuba_baseline(results: list[Result]) -> dict[str, list[Result]]:
    """Results by the SCuBA baseline (service) of their first SCuBA id, in the baselines'
    order; results of controls no SCuBA policy names come last, under "Not in SCuBA"."""
    groups: dict[str, list[Result]] = {}
    for result in results:
        service = scuba_baselines()[result.scuba[0]]["service"] if result.scuba else ""
        groups.setdefault(service, []).append(result)
    order = list(dict.fromkeys(v["service"] for v in scuba_baselines().values()))
    ranked = sorted(groups, key=lambda s: order.index(s) if s in order else len(order))
    return {(s or "Not in SCuBA"): groups[s] for s in ranked}


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


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: white space
# among them becomes a space, the rest the replacement character. Data reaches no reader with a
# line break it chose, a terminal escape sequence or a byte an XML parser refuses.
_ONE_LINE = {
    code: " " if chr(code).isspace() else "\ufffd"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def one_line(text: str) -> str:
    """`text` as one line of plain characters (see `_ONE_LINE`)."""
    return text.translate(_ONE_LINE)


# Markdown from data must stay text on GitHub, where report.md is the job summary. Escaped (with
# a backslash, or as an entity): what opens links, images, raw HTML, autolinks in angle
# brackets, entities, code, emphasis, math and table cells; `_` only where it could open or
# close emphasis, so snake_case names read as they are. Broken with a word joiner (U+2060,
# invisible): what GitHub links by itself, bare URLs, `www.` hosts, e-mail addresses and
# @mentions.
_MD_PUNCTUATION = re.compile(r"[\\`*~\[\]<>|&$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?i:(?<=www))(?=\.)|(?<=@)")
# What makes a line a heading, list item, rule or setext underline when it starts the line (a
# quote's `>` is escaped wherever it is). A list's number counts only with a space after it.
_MD_LINE_START = re.compile(r"#{1,6}(?=\s|$)|[+=-]|\d{1,9}(?=[.)](?:\s|$))")
WORD_JOINER = "\u2060"
# Angle brackets as entities (a reader of the raw file sees them as HTML's), the rest escaped.
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;"}


def _md_escape(match: re.Match[str]) -> str:
    char = match.group()
    return _MD_ENTITIES.get(char) or "\\" + char


def md_text(text: str) -> str:
    """Text for Markdown, on one line, that renders as itself: no markup, link, HTML or
    mention from the data, and safe in a table cell."""
    escaped = _MD_PUNCTUATION.sub(_md_escape, " ".join(one_line(text).split()))
    escaped = _MD_AUTOLINK.sub(WORD_JOINER, escaped)
    start = _MD_LINE_START.match(escaped)
    if start:
        # A number's dot or parenthesis, or the first sign, is what must not count.
        end = start.end()
        escaped = (
            escaped[:end] + "\\" + escaped[end:] if start.group().isdigit() else "\\" + escaped
        )
    # A heading's closing #s are dropped: keep a name's own.
    return re.sub(r"(?<= )#+$", lambda m: "\\#" * len(m.group()), escaped)


# Table cells and running text are escaped alike.
md_cell = md_text


def md_code(text: str, *, in_table: bool = False) -> str:
    """`text` as a code span: nothing inside is markup, links or mentions, and a backtick in the
    data cannot end it early. In a table, pipes are escaped (GFM reads them first)."""
    inner = " ".join(one_line(text).split()).replace("`", "'")
    if in_table:
        inner = inner.replace("|", "\\|")
    return f"`{inner}`" if inner else "``"
