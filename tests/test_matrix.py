"""The responsibility matrix in the demo's reports: every citation of the catalog, with the
controls that answer it; citations nothing answers are listed, never dropped."""

from __future__ import annotations

import csv
import io
import json

from auditor.policy import load_policies
from auditor.reports.matrix import canonical, reference
from auditor.resources import policies_dir

from conftest import DemoRun
from helpers import members


def _rows(demo_run: DemoRun) -> dict[str, dict[str, str]]:
    text = (demo_run.out / "matrix.csv").read_text(encoding="utf-8")
    return {row["citation"]: row for row in csv.DictReader(io.StringIO(text))}


def test_every_citation_of_the_catalog_is_a_row_with_its_controls(demo_run: DemoRun) -> None:
    rows = _rows(demo_run)
    ran = {r["control"] for r in demo_run.results["results"]}
    for policy in load_policies([policies_dir()]):
        for citation in policy.citations:
            row = rows[canonical(citation)]
            if policy.id in ran:
                assert policy.id in row["controls"], (citation, policy.id)
    # Every row of the reference list is there, in the rule's order, covered or not.
    assert list(rows)[: len(reference())] == [c.citation for c in reference()]


def test_uncovered_citations_are_listed_as_such(demo_run: DemoRun) -> None:
    rows = _rows(demo_run)
    sanction = rows["164.308(a)(1)(ii)(C)"]
    assert sanction["requirement"] == "Sanction policy"
    assert sanction["required_or_addressable"] == "Required"
    assert sanction["responsibility"] == "not covered by any control"
    assert sanction["controls"] == ""


def test_provider_rows_name_the_agreement_they_rest_on(demo_run: DemoRun) -> None:
    facility = _rows(demo_run)["164.310(a)(1)"]
    assert facility["responsibility"] == "provider"
    assert "provider.microsoft.baa: Inherited" in facility["controls"]
    assert "Microsoft Corporation" in facility["inherited_from"]
    assert "signed 20" in facility["inherited_from"]
    encryption = _rows(demo_run)["164.312(a)(2)(iv)"]
    assert encryption["responsibility"] == "provider, shared, customer"
    assert encryption["required_or_addressable"] == "Addressable"


def test_the_matrix_is_in_both_reports_and_the_bundle(demo_run: DemoRun) -> None:
    html = (demo_run.out / "report.html").read_text(encoding="utf-8")
    markdown = (demo_run.out / "report.md").read_text(encoding="utf-8")
    assert 'id="matrix"' in html and "Sanction policy" in html
    assert "## Responsibility matrix" in markdown and "| 164.312(d) |" in markdown
    bundle = members(demo_run.bundle)
    assert bundle["matrix.csv"] == (demo_run.out / "matrix.csv").read_bytes()
    listed = json.loads(bundle["manifest.json"])["files"]
    assert any(f["path"] == "matrix.csv" for f in listed)
