"""Code scanning keeps one set of alerts per category, and takes the category from
results.sarif's `automationDetails.id` (all before its last `/`) whatever the upload step says:
two tenants audited by one workflow must never share one, or each upload closes the other's
alerts."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli


def _snapshot(organisation: str) -> dict[str, object]:
    return {
        "format": "commsaudit/snapshot/v1",
        "scope": {"org": {"organisation": [organisation]}},
        "sections": [
            {
                "name": "org.training",
                "platform": "org",
                "subject": organisation,
                "status": "ok",
                "source": "attestations",
                "data": {"latest": {"age_days": 400, "coverage": 0.5}, "required_coverage": 0.95},
            }
        ],
    }


def _category(tmp_path: Path, organisation: str, *extra: str) -> str:
    work = tmp_path / organisation.replace(" ", "-")
    work.mkdir()
    (work / "snapshot.json").write_text(json.dumps(_snapshot(organisation)))
    (work / "commsaudit.toml").write_text(
        '[replay]\nfiles = ["snapshot.json"]\n[policies]\ncontrols = ["org.training.*"]\n'
        '[evidence]\nout = "out"\n'
    )
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
