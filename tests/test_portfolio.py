"""`commsaudit report BUNDLE…`: several runs in one portfolio report."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DemoRun
from helpers import members, rewrite, run_cli


def test_two_bundles_make_one_portfolio(
    demo_run: DemoRun, fabrikam_bundle: Path, tmp_path: Path
) -> None:
    proc = run_cli("report", demo_run.bundle, fabrikam_bundle, "--out", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # some run has failures
    markdown = (tmp_path / "portfolio.md").read_text()
    html = (tmp_path / "portfolio.html").read_text()
    contoso = demo_run.results["summary"]
    fabrikam = json.loads(members(fabrikam_bundle)["results.json"])["summary"]
    row = next(line for line in markdown.splitlines() if "Fabrikam Clinic" in line)
    assert f"| {fabrikam['pass']} | {fabrikam['fail']} |" in row
    total = next(line for line in markdown.splitlines() if line.startswith("| **all**"))
    assert f"| {contoso['fail'] + fabrikam['fail']} |" in total
    # Failures across both, the critical ones first.
    failures = markdown[markdown.index("## Failures and errors") :]
    first = failures.splitlines()[4]
    assert "| critical |" in first
    assert "m365.exo.smtp-auth-disabled" in failures and "aws.ses.tls-required" in failures
    assert "Contoso Health" in html and "Fabrikam Clinic" in html and "<script" not in html


def test_a_bundle_that_does_not_verify_is_refused(demo_run: DemoRun, tmp_path: Path) -> None:
    edited = rewrite(demo_run.bundle, tmp_path / "edited.zip", {"report.md": b"# all good\n"})
    proc = run_cli("report", edited, "--out", tmp_path / "p", cwd=tmp_path)
    assert proc.returncode == 2 and "the bundle does not verify" in proc.stderr
