"""--output-formats: which files go beside the bundle. The bundle holds every one whatever is
chosen; a file not chosen is not left from an earlier run to pass for this one's."""

from __future__ import annotations

from pathlib import Path

from helpers import members, run_cli


def test_only_the_chosen_files_are_written_beside_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("an earlier run's report")
    proc = run_cli("audit", "--demo", "--out", out, "--output-formats", "junit,sarif", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (bundle,) = out.glob("*.zip")
    beside = {p.name for p in out.iterdir() if p.suffix != ".zip" and not p.name.endswith(".pem")}
    assert beside == {"junit.xml", "results.sarif"}
    inside = members(bundle)
    for name in ("report.md", "report.html", "matrix.csv", "findings.csv", "results.json"):
        assert name in inside


def test_an_unknown_format_is_a_usage_error_naming_the_choices(tmp_path: Path) -> None:
    proc = run_cli("audit", "--demo", "--output-formats", "junit,pdf", cwd=tmp_path)
    assert proc.returncode == 2
    assert "'pdf' is not one of markdown, html, matrix, findings, ocsf, junit, sarif" in proc.stderr


def test_every_side_file_is_a_report_the_bundle_holds() -> None:
    """auditor/defaults.py names the side files (for --help); auditor/reports/registry.py makes
    them. A report added to one and not the other fails here."""
    from auditor.defaults import SIDE_FILES
    from auditor.evidence import layout
    from auditor.reports.registry import REPORTS

    made = {r.file for r in REPORTS} | {layout.RESULTS}
    assert set(SIDE_FILES.values()) <= made
    assert made - set(SIDE_FILES.values()) == {"diff.json"}  # written only against a baseline
