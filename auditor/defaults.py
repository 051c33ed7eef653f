"""Defaults the command line shows in its help, kept apart from the modules that use them so that
`commsaudit --help` and `--version` import almost nothing."""

from __future__ import annotations

from auditor.evidence import layout

DEFAULT_DEADLINE_SECONDS = 900.0

# The files written beside the bundle, by the name `--output-formats` gives them (every one is
# in the bundle whatever is chosen: the evidence does not depend on what a CI step wanted).
SIDE_FILES = {
    "markdown": "report.md",
    "html": "report.html",
    "matrix": "matrix.csv",
    "findings": "findings.csv",
    "ocsf": "findings.ocsf.json",
    "junit": "junit.xml",
    "sarif": "results.sarif",
    "results": layout.RESULTS,
}
