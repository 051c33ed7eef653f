"""results.sarif as GitHub code scanning reads it in the repository that ran the audit.

Code scanning keeps one set of alerts per category, and takes the category from
`automationDetails.id` (all before its last `/`) whatever the upload step says: two tenants
audited by one workflow must never share one, or each upload closes the other's alerts. An alert
points at a file of that repository (its config), and a waived failure is no open error."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from helpers import TRAINING_REPLAY, half_trained_attestations, run_cli, training_snapshot


def _category(tmp_path: Path, organisation: str, *extra: str) -> str:
    work = tmp_path / organisation.replace(" ", "-")
    work.mkdir()
    training_snapshot(work, coverage=0.5, age_days=400, organisation=organisation)
    (work / "commsaudit.toml").write_text(TRAINING_REPLAY + '[evidence]\nout = "out"\n')
    proc = run_cli("audit", *extra, cwd=work)
    assert proc.returncode == 1, proc.stderr  # the training control fails: an alert to keep
    sarif = json.loads((work / "out" / "results.sarif").read_text())
    (run,) = sarif["runs"]
    assert run["results"], "nothing for code scanning to show"
    automation_id = run["automationDetails"]["id"]
    category, _, run_id = automation_id.rpartition("/")
    assert len(run_id) == 36  # the run's uuid: each upload is its own analysis
    return category


def test_two_tenants_upload_under_two_categories(tmp_path: Path) -> None:
    first = _category(tmp_path, "Clinic North")
    second = _category(tmp_path, "Clinic South")
    assert first == "commsaudit/hipaa/Clinic-North"
    assert second == "commsaudit/hipaa/Clinic-South"


def test_a_category_given_by_the_workflow_is_the_one_code_scanning_sees(tmp_path: Path) -> None:
    given = _category(tmp_path, "Clinic North", "--sarif-category", "commsaudit/tenant a")
    assert given == "commsaudit/tenant-a"


def _sarif_in_a_repository(tmp_path: Path, waiver: str = "") -> dict[str, Any]:
    """An audit run from a repository's checkout, its config under `audit/`, as a workflow runs
    it (GITHUB_WORKSPACE names the checkout)."""
    repository = tmp_path / "repository"
    (repository / "audit").mkdir(parents=True)
    half_trained_attestations(repository / "audit")
    (repository / "audit" / "commsaudit.toml").write_text(
        "# Weekly audit of the clinic's records\n\n"
        '[attestations]\nfile = "attestations.yaml"\n'
        '[policies]\ncontrols = ["org.training.current"]\n[evidence]\nout = "out"\n' + waiver
    )
    proc = run_cli(
        "audit", "--config", "audit/commsaudit.toml", cwd=repository,
        env={"GITHUB_WORKSPACE": str(repository)},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    sarif: dict[str, Any] = json.loads((repository / "audit" / "out" / "results.sarif").read_text())
    return sarif


def test_an_alert_points_at_the_config_table_that_scoped_it(tmp_path: Path) -> None:
    (run,) = _sarif_in_a_repository(tmp_path)["runs"]
    (result,) = run["results"]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "audit/commsaudit.toml"  # in the repository
    assert location["region"]["startLine"] == 3  # the [attestations] table
    rule = run["tool"]["driver"]["rules"][result["ruleIndex"]]
    assert result["level"] == rule["defaultConfiguration"]["level"] == "warning"  # medium


def test_a_waived_failure_is_not_an_open_error_alert(tmp_path: Path) -> None:
    expires = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=60)).isoformat()
    waiver = (
        '[[waivers]]\ncontrol = "org.training.current"\nreason = "campaign extended"\n'
        f'approved_by = "Dana Reyes"\nexpires = {expires}\n'
    )
    (result,) = _sarif_in_a_repository(tmp_path, waiver)["runs"][0]["results"]
    assert result["level"] == "note"
    assert result["suppressions"][0]["status"] == "accepted"
