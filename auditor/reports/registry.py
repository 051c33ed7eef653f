"""The reports every run writes into its bundle, in order: the file name and how it is made from
the run's `ReportInput`. Those that `--output-formats` can also put beside the bundle are named in
auditor/defaults.py (the command line's help needs no renderer); a test holds the two together.
A new report is one entry here (and one there, if CI steps should find it beside the bundle).
The OSCAL assessment results come last, outside this list: they cite the other members' hashes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from auditor.jsonutil import dumps_pretty_bytes
from auditor.reports import findings, html, junit, markdown, matrix, ocsf, sarif
from auditor.reports.common import ReportInput


@dataclass(frozen=True)
class Report:
    file: str
    render: Callable[[ReportInput], bytes | None]  # None: nothing to write for this run


REPORTS = (
    Report("report.md", lambda r: markdown.render(r).encode()),
    Report("report.html", lambda r: html.render(r).encode()),
    Report("matrix.csv", lambda r: matrix.to_csv(matrix.rows(r)).encode()),
    Report("findings.csv", lambda r: findings.to_csv(r).encode()),
    Report("findings.ocsf.json", lambda r: dumps_pretty_bytes(ocsf.render(r))),
    Report("diff.json", lambda r: None if r.diff is None else dumps_pretty_bytes(r.diff.to_json())),
    Report("junit.xml", lambda r: junit.render(r).encode()),
    Report("results.sarif", lambda r: dumps_pretty_bytes(sarif.render(r))),
)
