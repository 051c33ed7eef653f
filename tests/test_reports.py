"""The machine-readable reports in the demo bundle: JUnit, SARIF and OSCAL hang together."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from conftest import DemoRun
from helpers import member_json, members


def test_junit_has_one_testcase_per_control_and_subject(demo_run: DemoRun) -> None:
    root = ET.fromstring(members(demo_run.bundle)["junit.xml"])
    suite = root.find("testsuite")
    assert suite is not None
    results = demo_run.results["results"]
    cases = suite.findall("testcase")
    assert len(cases) == len(results) == int(suite.get("tests", "0"))
    assert {c.get("name") for c in cases} == {f"{r['control']} [{r['subject']}]" for r in results}
    failed = sorted(r["control"] for r in results if r["status"] == "fail")
    failures = [c for c in cases if c.find("failure") is not None]
    assert sorted(c.get("classname") or "" for c in failures) == failed
    assert "org.training.current" in failed and "dns.dmarc.enforced" in failed
    assert suite.get("failures") == str(len(failed))
    waived = next(c for c in cases if c.get("classname") == "m365.retention.teams")
    assert waived.find("skipped") is not None


def test_every_junit_element_carries_its_time_in_seconds(demo_run: DemoRun) -> None:
    # Test reporters read `time` on each testcase and suite, and show "NaN ms" without it.
    root = ET.fromstring(members(demo_run.bundle)["junit.xml"])
    (suite,) = root.iter("testsuite")
    cases = list(root.iter("testcase"))
    times = [float(case.attrib["time"]) for case in cases]
    assert all(0 <= t < 60 for t in times)
    assert sum(times) > 0  # judged by this run, so measured
    run_seconds = float(suite.attrib["time"])
    assert float(root.attrib["time"]) == run_seconds
    assert sum(times) <= run_seconds + 1  # the run's times are whole seconds


def test_sarif_has_one_rule_per_control_and_results_for_what_needs_attention(
    demo_run: DemoRun,
) -> None:
    sarif = member_json(demo_run.bundle, "results.sarif")
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    controls = sorted({r["control"] for r in demo_run.results["results"]})
    assert [r["id"] for r in rules] == controls
    by_rule = {r["ruleId"]: r for r in run["results"]}
    needs_attention = {
        r["control"]
        for r in demo_run.results["results"]
        if r["status"] in ("fail", "error", "waived")
    }
    assert set(by_rule) == needs_attention
    assert {"org.training.current", "m365.retention.teams"} <= needs_attention
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert by_rule["org.training.current"]["level"] == "warning"  # medium severity
    assert by_rule["m365.retention.teams"]["suppressions"][0]["kind"] == "external"


def _uuids(node: Any, key: str = "uuid") -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                found.add(v)
            found |= _uuids(v, key)
    elif isinstance(node, list):
        for item in node:
            found |= _uuids(item, key)
    return found


def test_oscal_cross_references_resolve(demo_run: DemoRun) -> None:
    document = member_json(demo_run.bundle, "oscal/assessment-results.json")["assessment-results"]
    result = document["results"][0]
    observations = {o["uuid"] for o in result["observations"]}
    resources = {r["uuid"]: r for r in document["back-matter"]["resources"]}
    assert document["import-ap"]["href"].removeprefix("#") in resources
    for observation in result["observations"]:
        assert observation["methods"] == ["TEST"]
        for evidence in observation["relevant-evidence"]:
            assert evidence["href"].removeprefix("#") in resources
    counted = [r for r in demo_run.results["results"] if r["status"] != "not_applicable"]
    assert len(result["findings"]) == len(counted)
    for finding in result["findings"]:
        assert finding["target"]["status"]["state"] in ("satisfied", "not-satisfied")
        for related in finding.get("related-observations", []):
            assert related["observation-uuid"] in observations
    # Every hash in back-matter is the hash of the bundle file it names.
    import hashlib

    content = members(demo_run.bundle)
    for resource in resources.values():
        for link in resource.get("rlinks", []):
            for digest in link.get("hashes", []):
                assert hashlib.sha256(content[link["href"]]).hexdigest() == digest["value"]
    actors = _uuids(result.get("local-definitions", {}))
    for observation in result["observations"]:
        for origin in observation["origins"]:
            assert all(a["actor-uuid"] in actors for a in origin["actors"])


def test_markdown_report_lists_failures_with_remediation(demo_run: DemoRun) -> None:
    report = members(demo_run.bundle)["report.md"].decode()
    assert report.startswith("# commsaudit report: Contoso Health")
    assert "### Fail: `org.training.current` — Contoso Health" in report
    assert "Remediation: Run security awareness training" in report
    assert "## By HIPAA safeguard" in report and "Administrative safeguards" in report


def test_oscal_validates_with_compliance_trestle(demo_run: DemoRun, tmp_path: Path) -> None:
    """trestle's own validators (schema, duplicate uuids, links into back-matter), run as an
    assessor would: a trestle workspace holding the bundle's file."""
    trestle = Path(sys.executable).with_name("trestle")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    init = subprocess.run(
        [trestle, "init"], cwd=workspace, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    target = workspace / "assessment-results" / "demo" / "assessment-results.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(members(demo_run.bundle)["oscal/assessment-results.json"])
    done = subprocess.run(
        [trestle, "validate", "-a"], cwd=workspace, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "VALID: Model" in output and "demo/assessment-results.json" in output
    # The links validator only warns; a warning here means a dangling or unused reference.
    assert "WARNING" not in output, output


def _demo_report(demo_run: DemoRun) -> Any:
    from auditor.policy import load_policies
    from auditor.reports.common import ReportInput
    from auditor.resources import policies_dir
    from auditor.results import Results

    results = Results.from_json(member_json(demo_run.bundle, "results.json"))
    scope = member_json(demo_run.bundle, "manifest.json")["scope"]
    return ReportInput(results=results, policies=load_policies([policies_dir()]), scope=scope)


def test_the_job_summary_puts_failures_first_and_folds_the_rest(demo_run: DemoRun) -> None:
    report = members(demo_run.bundle)["report.md"].decode()
    places = [
        report.index("## Failures"),
        report.index("## Waived failures"),
        report.index("<summary>Responsibility matrix"),
        report.index("<summary>All results"),
    ]
    assert places == sorted(places)
    fails = [line for line in report.splitlines() if line.startswith("### Fail: ")]
    severities = [line.split("· severity ")[1].split(" ")[0] for line in report.splitlines()
                  if line.startswith("**") and "· severity " in line][: len(fails)]  # fmt: skip
    order = ["critical", "high", "medium", "low", "info"]
    assert severities == sorted(severities, key=order.index)  # most severe first


def test_a_report_too_large_for_a_job_summary_drops_the_least_important_first(
    demo_run: DemoRun,
) -> None:
    from auditor.reports import markdown

    report = _demo_report(demo_run)
    full = markdown.render(report)
    fails = [line for line in full.splitlines() if line.startswith("### Fail: ")]
    everything = full.index("<details>")  # where the folded parts begin
    folded_away = markdown.render(report, limit=everything + 400)
    assert len(folded_away.encode()) <= everything + 400
    assert "<summary>All results" not in folded_away and "Cut to fit a job summary" in folded_away
    assert [line for line in folded_away.splitlines() if line.startswith("### Fail: ")] == fails
    tiny = markdown.render(report, limit=3000)
    assert len(tiny.encode()) <= 3000
    assert tiny.startswith("# commsaudit report") and tiny.rstrip().endswith("artifact)._")
    kept = [line for line in tiny.splitlines() if line.startswith("### Fail: ")]
    assert kept and fails[: len(kept)] == kept  # the most severe ones stay
