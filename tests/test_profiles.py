"""`--profile hipaa-nprm-2025` on the demo changes exactly the verdicts the catalog says the
profile changes (../shared/design/controls.md: "stricter values where noted, plus the NPRM-only
controls"), and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DemoRun
from helpers import run_cli

# The controls the catalog gives a stricter NPRM value, and the NPRM-only ones.
STRICTER = {
    "m365.mfa.admin-roles",  # phishing-resistant strength
    "m365.audit.log-retention",  # six years, not one
    "m365.apps.user-consent-restricted",  # "strictly, none at all"
    "dns.dmarc.enforced",  # reject only
    "dns.spf.enforced",  # -all only ("baseline also ~all")
    "aws.s3.encryption",  # aws:kms only
    "org.contingency.restore-tested",  # restore within 72 hours
}
NPRM_ONLY = {"org.compliance-audit.current", "org.vendor-verification.current"}


def test_the_nprm_profile_changes_what_the_catalog_says_and_nothing_else(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    proc = run_cli(
        "audit",
        "--demo",
        "--profile",
        "hipaa-nprm-2025",
        "--format",
        "json",
        "--out",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    baseline = {(r["control"], r["subject"]): r for r in demo_run.results["results"]}
    nprm = {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}

    added = {control for control, _ in set(nprm) - set(baseline)}
    assert added == NPRM_ONLY
    assert not set(baseline) - set(nprm)  # nothing of the baseline is dropped
    changed = {
        key: (baseline[key]["status"], nprm[key]["status"])
        for key in baseline
        if baseline[key]["status"] != nprm[key]["status"]
    }
    assert {control for control, _ in changed} <= STRICTER, changed
    # The sample's settings that meet the baseline but not the NPRM values:
    assert changed[("aws.s3.encryption", "123456789012")] == ("pass", "fail")
    assert changed[("m365.audit.log-retention", "contoso-health.onmicrosoft.com")] == (
        "pass",
        "fail",
    )
    assert changed[("dns.spf.enforced", "contoso-health-news.org")] == ("pass", "fail")
    assert changed[("m365.apps.user-consent-restricted", "contoso-health.onmicrosoft.com")] == (
        "pass",
        "fail",
    )
    # The stricter S3 value fails the bucket that has only S3-managed keys, and says so.
    s3 = nprm[("aws.s3.encryption", "123456789012")]
    (evidence,) = s3["evidence"]
    assert evidence["value"] == "AES256" and evidence["context"]["name"] == "contoso-trail-logs"
