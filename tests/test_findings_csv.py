"""findings.csv: one row per result, beside the bundle and inside it, that a spreadsheet (or
Python's csv module, as one reads it) opens as data."""

from __future__ import annotations

import csv
import io
import json

from conftest import DemoRun
from helpers import members


def test_findings_csv_has_a_row_per_result_in_the_bundle_and_beside_it(demo_run: DemoRun) -> None:
    beside = (demo_run.out / "findings.csv").read_bytes()
    inside = members(demo_run.bundle)
    assert inside["findings.csv"] == beside
    listed = json.loads(inside["manifest.json"])["files"]
    assert any(f["path"] == "findings.csv" for f in listed)  # hashed, so verify covers it

    rows = list(csv.DictReader(io.StringIO(beside.decode("utf-8"))))
    results = json.loads(inside["results.json"])["results"]
    assert len(rows) == len(results)
    for row, result in zip(rows, results, strict=True):
        assert (row["control"], row["subject"], row["status"]) == (
            result["control"],
            result["subject"],
            result["status"],
        )
        assert row["severity"] == result["severity"] and row["reason"] == result["reason"]
        assert row["citations"] == "; ".join(result["citations"])
        index = int(row["evidence"].split("/")[2])
        assert results[index] is result and int(row["evidence_items"]) == len(result["evidence"])
    waived = next(r for r in rows if r["status"] == "waived")
    assert "approved by" in waived["waiver"] and waived["run_id"]
