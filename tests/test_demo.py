"""Acceptance of issue #2 end to end: the demo, its JSON, its bundle and `verify`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from auditor.resources import schema_path

from conftest import DemoRun
from helpers import member_json, members, run_cli


def test_demo_exits_1_because_the_sample_has_a_failing_control(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 1, demo_run.stderr
    assert "Evidence bundle:" in demo_run.stderr
    assert str(demo_run.bundle.name) in demo_run.stderr


def test_demo_json_is_results_v1_with_every_kind_of_verdict(demo_run: DemoRun) -> None:
    results = demo_run.results
    assert results["format"] == "commsaudit/results/v1"
    schema = json.loads(schema_path("results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(results)
    statuses = {r["status"] for r in results["results"]}
    assert {"pass", "fail", "waived", "inherited"} <= statuses
    by_id = {r["control"]: r for r in results["results"]}
    assert by_id["org.training.current"]["status"] == "fail"
    assert by_id["m365.retention.teams"]["status"] == "waived"
    assert by_id["provider.microsoft.baa"]["status"] == "inherited"
    assert by_id["m365.exo.smtp-auth-disabled"]["status"] == "pass"
    summary = results["summary"]
    assert summary == {s: sum(r["status"] == s for r in results["results"]) for s in summary}


def test_stdout_holds_only_the_json(demo_run: DemoRun) -> None:
    json.loads(demo_run.stdout)  # nothing for people leaked onto stdout
    assert "Results by category" in demo_run.stderr


def test_failure_evidence_points_at_the_offending_value(demo_run: DemoRun) -> None:
    result = next(r for r in demo_run.results["results"] if r["control"] == "org.training.current")
    evidence = result["evidence"][0]
    assert evidence["section"] == "org.training"
    assert evidence["pointer"] == "/latest/coverage"
    assert evidence["value"] == 0.9125
    assert evidence["source"] == "attestations:attestations.yaml"
    assert "0.95" in evidence["message"]
    assert result["remediation"]


def test_expired_waiver_is_ignored_and_reported(demo_run: DemoRun) -> None:
    warnings = demo_run.results["run"]["warnings"]
    assert any("org.training.current" in w and "expired" in w for w in warnings)
    assert "expired" in demo_run.stderr


def test_bundle_has_the_contract_layout(demo_run: DemoRun) -> None:
    names = set(members(demo_run.bundle))
    for required in (
        "manifest.json",
        "snapshot.json",
        "results.json",
        "report.md",
        "report.html",
        "junit.xml",
        "results.sarif",
        "oscal/assessment-results.json",
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "raw/index.json",
        "raw/attestations/attestations.yaml",
    ):
        assert required in names
    assert any(n.startswith("policies/") for n in names)
    manifest = member_json(demo_run.bundle, "manifest.json")
    assert manifest["run"]["id"] == demo_run.results["run"]["id"]
    assert manifest["scope"]["organisations"] == ["Contoso Health"]
    assert manifest["signature"]["fingerprint"].startswith("sha256:")
    assert manifest["policy_digest"] == demo_run.results["run"]["policy_digest"]
    listed = {f["path"] for f in manifest["files"]}
    assert listed == names - {"manifest.json", "SHA256SUMS", "SHA256SUMS.sig"}


def test_reports_are_also_written_beside_the_bundle(demo_run: DemoRun) -> None:
    for name in ("report.md", "report.html", "junit.xml", "results.sarif", "results.json"):
        assert (demo_run.out / name).read_bytes() == members(demo_run.bundle)[name]


def test_verify_passes_on_the_demo_bundle(demo_run: DemoRun, tmp_path: Path) -> None:
    proc = run_cli("verify", demo_run.bundle, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "signature: valid" in proc.stderr
    pinned = run_cli("verify", demo_run.bundle, "--key", demo_run.public_key, cwd=tmp_path)
    assert pinned.returncode == 0, pinned.stderr
    assert "pinned with --key" in pinned.stderr


def test_verify_json_report(demo_run: DemoRun, tmp_path: Path) -> None:
    proc = run_cli("verify", demo_run.bundle, "--format", "json", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["signature"] == "valid"
    assert report["results_compared"] == len(demo_run.results["results"])


def test_replaying_a_bundles_snapshot_derives_each_joined_section_once(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    """A bundle's snapshot holds derived sections (BAAs joined with the vendors in use, drift);
    replayed, they are derived again from the replayed inputs, not copied beside them."""
    (tmp_path / "snapshot.json").write_bytes(members(demo_run.bundle)["snapshot.json"])
    (tmp_path / "commsaudit.toml").write_text(
        '[replay]\nfiles = ["snapshot.json"]\n[evidence]\nout = "out"\n'
    )
    proc = run_cli("audit", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    sections = member_json(next((tmp_path / "out").glob("*.zip")), "snapshot.json")["sections"]
    keys = [(s["name"], s["subject"]) for s in sections]
    assert len(keys) == len(set(keys))
    assert ("pulumi.drift", "contoso-comms/prod") in keys
    assert ("provider.aws", "123456789012") in keys


def test_the_terminal_names_the_item_that_failed(demo_run: DemoRun) -> None:
    """The drift failure says which resource and setting, not only a pointer."""
    lines = demo_run.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "pulumi.declared-matches-live" in line)
    block = " ".join(lines[start : start + 6])
    assert "at resource=phi-notices setting=tls_policy declared=REQUIRE live=OPTIONAL" in block
