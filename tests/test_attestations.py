"""The attestations connector: validation with line numbers, and dates relative to the run."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest

from auditor.model.errors import InputError
from connectors.attestations import AttestationsConnector
from connectors.base import CollectContext

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)

GOOD = """\
organisation: Example Clinic
business_associate_agreements:
  - vendor: microsoft
    services: ["*"]
    signed: 2024-01-10
  - vendor: sendgrid
    services: [email-api]
    signed: 2023-01-01
    expires: 2026-01-01
risk_analyses:
  - {date: 2025-01-01, performed_by: A}
  - {date: 2026-08-01, performed_by: B}
trainings:
  - {date: 2026-09-01, workforce: 240, completed: 219}
restore_tests:
  - {date: 2026-10-01, system: archive, restore_hours: 80, succeeded: false}
  - {date: 2026-02-01, system: archive, restore_hours: 6, succeeded: true}
vendor_verifications:
  - {vendor: microsoft, date: 2026-06-01, method: SOC 2 Type II}
"""


def _collect(tmp_path: Path, text: str, name: str = "attestations.yaml") -> dict[str, object]:
    (tmp_path / name).write_text(text)
    connector = AttestationsConnector({"file": name}, tmp_path)
    connector.preflight(NOW)
    ctx = CollectContext(connector="attestations", now=NOW, deadline=time.monotonic() + 5)
    asyncio.run(connector.collect(ctx))
    assert ctx.subjects == [("org", "organisation", "Example Clinic")]
    assert ctx.raw[0].body == text.encode()
    return {s.name: s.data for s in ctx.sections}


def test_normalised_sections(tmp_path: Path) -> None:
    sections = _collect(tmp_path, GOOD)
    agreements = sections["org.baa"]["agreements"]  # type: ignore[index]
    assert [(a["vendor"], a["current"]) for a in agreements] == [
        ("microsoft", True),
        ("sendgrid", False),
    ]
    assert sections["org.risk_analysis"] == {
        "latest": {"date": "2026-08-01", "performed_by": "B", "age_days": 118},
        "count": 2,
    }
    training = sections["org.training"]["latest"]  # type: ignore[index]
    assert training["coverage"] == 0.9125 and training["age_days"] == 87
    restore = sections["org.restore_test"]
    assert restore["latest"]["succeeded"] is False  # type: ignore[index]
    assert restore["latest_successful"]["date"] == "2026-02-01"  # type: ignore[index]
    assert sections["org.incident_response"] == {"latest": None, "count": 0}
    # Only current agreements are business associates to verify.
    assert sections["org.vendor_verification"] == {
        "vendors": [
            {
                "vendor": "microsoft",
                "name": "microsoft",
                "latest": {
                    "vendor": "microsoft",
                    "date": "2026-06-01",
                    "method": "SOC 2 Type II",
                    "age_days": 179,
                },
            }
        ]
    }


def test_json_attestations_work_too(tmp_path: Path) -> None:
    sections = _collect(
        tmp_path,
        '{"organisation": "Example Clinic", "risk_analyses": '
        '[{"date": "2026-11-01", "performed_by": "X"}]}',
        "attestations.json",
    )
    assert sections["org.risk_analysis"]["latest"]["age_days"] == 26  # type: ignore[index]


def test_manual_checks_keep_the_latest_and_not_met_wins_a_tie(tmp_path: Path) -> None:
    sections = _collect(
        tmp_path,
        "organisation: Example Clinic\nmanual_checks:\n"
        "  - {check: MS.AAD.4.1v1, date: 2025-10-01, performed_by: A, met: true}\n"
        "  - {check: MS.AAD.4.1v1, date: 2026-10-01, performed_by: B, met: false}\n"
        "  - {check: MS.AAD.2.2v1, date: 2026-11-01, performed_by: C, met: true, how: portal}\n"
        "  - {check: MS.AAD.2.2v1, date: 2026-11-01, performed_by: D, met: false}\n",
    )
    checks = sections["org.manual_checks"]["checks"]  # type: ignore[index]
    assert list(checks) == ["MS.AAD.2.2v1", "MS.AAD.4.1v1"]
    # A later check that found the policy not met replaces an older one that found it met.
    assert checks["MS.AAD.4.1v1"] == {
        "latest": {
            "check": "MS.AAD.4.1v1",
            "date": "2026-10-01",
            "performed_by": "B",
            "met": False,
            "age_days": 57,
        },
        "count": 2,
    }
    # Two checks on one day that disagree: the one that found it not met counts.
    assert checks["MS.AAD.2.2v1"]["latest"]["performed_by"] == "D"
    none = _collect(tmp_path, "organisation: Example Clinic\n")
    assert none["org.manual_checks"] == {"checks": {}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "organisation: X\ntrainings:\n  - date: 2026-02-30\n    workforce: 1\n    completed: 1\n",
            "attestations.yaml:3: trainings[0].date: '2026-02-30' is not a valid date (expected YYYY-MM-DD)",
        ),
        (
            "organisation: X\nrisk_analyses:\n  - date: 2027-01-01\n    performed_by: A\n",
            "attestations.yaml:3: risk_analyses[0].date: 2027-01-01 is later than today (2026-11-27)",
        ),
        (
            "organisation: X\ntrainings:\n  - {date: 2026-01-01, workforce: 5, completed: 6}\n",
            "attestations.yaml:3: trainings[0].completed: 6 is more than the workforce of 5",
        ),
        (
            "organisation: X\nrisk_analysis:\n  - date: 2026-01-01\n",
            "attestations.yaml:1: (top level): unknown key 'risk_analysis'; did you mean 'risk_analyses'?",
        ),
        (
            "organisation: X\nrestore_tests:\n  - {date: 2026-01-01, system: s, succeeded: true}\n",
            "attestations.yaml:3: restore_tests[0]: 'restore_hours' is a required property",
        ),
        (
            "organisation: X\nmanual_checks:\n  - {check: AAD-4.1, date: 2026-01-01, "
            "performed_by: A, met: true}\n",
            "attestations.yaml:3: manual_checks[0].check: 'AAD-4.1' does not have the expected form",
        ),
        (
            "organisation: X\nmanual_checks:\n  - {check: MS.AAD.4.1v1, date: 2026-01-01, "
            "performed_by: A}\n",
            "attestations.yaml:3: manual_checks[0]: 'met' is a required property",
        ),
        (
            "organisation: X\nmanual_checks:\n  - {check: MS.AAD.4.1v1, date: 2026-12-01, "
            "performed_by: A, met: true}\n",
            "attestations.yaml:3: manual_checks[0].date: 2026-12-01 is later than today",
        ),
        ("organisation: X\n  trainings: [\n", "attestations.yaml:2: invalid YAML"),
        (
            "organisation: X\norganisation: Y\n",
            "attestations.yaml:2: key 'organisation' appears twice",
        ),
        ("", "attestations.yaml: the file is empty"),
    ],
)
def test_problems_are_reported_with_their_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "attestations.yaml").write_text(text)
    connector = AttestationsConnector({"file": "attestations.yaml"}, tmp_path)
    with pytest.raises(InputError) as caught:
        connector.preflight(NOW)
    where = caught.value.where or ""
    line = f"{Path(where).name}: {caught.value.message}"
    assert line.startswith(expected), line


def test_missing_file_says_how_to_configure_it(tmp_path: Path) -> None:
    connector = AttestationsConnector({"file": "nope.yaml"}, tmp_path)
    with pytest.raises(InputError) as caught:
        connector.preflight(NOW)
    assert "cannot read the attestations file" in caught.value.message
    assert caught.value.hint and "[attestations] file" in caught.value.hint
