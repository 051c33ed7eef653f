"""`commsaudit diff` and `audit --baseline`: what changed between runs, and `--fail-on` deciding
the exit code from it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DemoRun
from helpers import member_json, members, rewrite, run_cli


def test_diff_between_the_two_samples_lists_changed_controls_and_values(
    demo_run: DemoRun, fabrikam_bundle: Path, tmp_path: Path
) -> None:
    proc = run_cli("diff", demo_run.bundle, fabrikam_bundle, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # something failed that did not before
    diff = json.loads(proc.stdout)
    assert diff["format"] == "commsaudit/diff/v1"
    tenant = "contoso-health.onmicrosoft.com -> fabrikamclinic.onmicrosoft.com"
    assert ["contoso-health.onmicrosoft.com", "fabrikamclinic.onmicrosoft.com"] in diff[
        "paired_subjects"
    ]
    smtp = next(c for c in diff["status_changes"] if c["control"] == "m365.exo.smtp-auth-disabled")
    assert (smtp["subject"], smtp["old"], smtp["new"], smtp["new_failure"]) == (
        tenant,
        "pass",
        "fail",
        True,
    )
    values = {
        (c["section"], c["pointer"]): (c["old"], c["new"])
        for c in diff["setting_changes"]
        if c["subject"] == tenant
    }
    # List items are named by their key, not their position, so an inserted item moves nothing.
    transport = (
        "m365.exo.transport_config",
        "/[Identity=Transport Settings]/SmtpClientAuthenticationDisabled",
    )
    assert values[transport] == (
        True,
        False,
    )
    assert ["m365", "tenant", "fabrikamclinic.onmicrosoft.com"] in diff["subjects_added"]
    assert ["dns", "domain", "contoso-health.org"] in diff["subjects_removed"]

    text = run_cli("diff", demo_run.bundle, fabrikam_bundle, cwd=tmp_path).stdout
    assert "New failures (" in text and "m365.exo.smtp-auth-disabled" in text
    assert "aws: " in text and "only in the old run" in text


def test_a_run_against_its_own_baseline_fails_only_on_what_is_new(
    demo_run: DemoRun, fabrikam_bundle: Path, tmp_path: Path
) -> None:
    # Against the same sample: failures, but none new, so --fail-on new exits 0.
    same = run_cli(
        "audit",
        "--demo",
        "--baseline",
        demo_run.bundle,
        "--fail-on",
        "new",
        "--out",
        tmp_path / "same",
        cwd=tmp_path,
    )
    assert same.returncode == 0, same.stderr
    (bundle,) = (tmp_path / "same").glob("*.zip")
    diff = member_json(bundle, "diff.json")
    assert diff["summary"]["new_failures"] == 0
    report = members(bundle)["report.md"].decode()
    assert "## Changes since the baseline" in report and "0 new failure(s)" in report
    assert run_cli("verify", bundle, cwd=tmp_path).returncode == 0

    # Against the other sample: Contoso fails controls Fabrikam passed or never had.
    other = run_cli(
        "audit",
        "--demo",
        "--baseline",
        fabrikam_bundle,
        "--fail-on",
        "new",
        "--out",
        tmp_path / "other",
        cwd=tmp_path,
    )
    assert other.returncode == 1, other.stderr
    (bundle,) = (tmp_path / "other").glob("*.zip")
    new = {
        c["control"] for c in member_json(bundle, "diff.json")["status_changes"] if c["new_failure"]
    }
    assert "aws.ses.tls-required" in new


def test_a_baseline_that_does_not_verify_stops_the_run(demo_run: DemoRun, tmp_path: Path) -> None:
    results = json.loads(members(demo_run.bundle)["results.json"])
    results["results"][0]["status"] = "pass"
    edited = rewrite(
        demo_run.bundle, tmp_path / "edited.zip", {"results.json": json.dumps(results).encode()}
    )
    proc = run_cli("audit", "--demo", "--baseline", edited, "--out", tmp_path / "o", cwd=tmp_path)
    assert proc.returncode == 2
    assert "the bundle does not verify" in proc.stderr and "results.json" in proc.stderr
    assert not (tmp_path / "o").exists()  # stopped before anything was collected or written


def test_fail_on_new_needs_a_baseline(tmp_path: Path) -> None:
    proc = run_cli("audit", "--demo", "--fail-on", "new", cwd=tmp_path)
    assert proc.returncode == 2 and "--fail-on new needs --baseline" in proc.stderr


def test_fail_on_a_severity_counts_only_failures_that_severe(tmp_path: Path) -> None:
    # org.training.current is the sample's one medium failure among these controls.
    args = ("audit", "--demo", "--controls", "org.*", "--out", tmp_path / "o")
    assert run_cli(*args, "--fail-on", "high", cwd=tmp_path).returncode == 1  # vendors-in-use
    only_training = ("audit", "--demo", "--controls", "org.training.*", "--out", tmp_path / "p")
    assert run_cli(*only_training, "--fail-on", "high", cwd=tmp_path).returncode == 0
    assert run_cli(*only_training, "--fail-on", "medium", cwd=tmp_path).returncode == 1
