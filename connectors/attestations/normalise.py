"""Turn a validated attestations document into the `org.*` snapshot sections.

Every date-relative fact (age in days, whether an agreement is current) is computed here against
the run's start, so the snapshot alone decides the verdicts and a later re-evaluation of the
bundle gives the same answer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Record list in the file -> section name. Each section holds the latest record and how many
# were on file.
LATEST_SECTIONS = {
    "risk_analyses": "org.risk_analysis",
    "trainings": "org.training",
    "incident_response_reviews": "org.incident_response",
    "compliance_audits": "org.compliance_audit",
}


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _with_age(record: dict[str, Any], today: dt.date) -> dict[str, Any]:
    out = dict(record)
    out["age_days"] = (today - _date(record["date"])).days
    return out


def _latest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(records, key=lambda r: r["date"]) if records else None


def _training(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    out["coverage"] = round(record["completed"] / record["workforce"], 4)
    return out


def agreement_is_current(agreement: dict[str, Any], today: dt.date) -> bool:
    if _date(agreement["signed"]) > today:
        return False
    for end in ("expires", "terminated"):
        if end in agreement and _date(agreement[end]) <= today:
            return False
    return True


def normalise(document: dict[str, Any], today: dt.date) -> dict[str, Any]:
    """Section name -> section data."""
    sections: dict[str, Any] = {}

    agreements = []
    for agreement in document.get("business_associate_agreements", []):
        entry = dict(agreement)
        entry["current"] = agreement_is_current(agreement, today)
        entry["age_days"] = (today - _date(agreement["signed"])).days
        agreements.append(entry)
    sections["org.baa"] = {"agreements": agreements}

    for key, name in LATEST_SECTIONS.items():
        records = document.get(key, [])
        latest = _latest(records)
        if latest is not None:
            latest = _with_age(latest, today)
            if key == "trainings":
                latest = _training(latest)
        sections[name] = {"latest": latest, "count": len(records)}

    tests = document.get("restore_tests", [])
    succeeded = [t for t in tests if t["succeeded"]]
    latest_test = _latest(tests)
    latest_ok = _latest(succeeded)
    sections["org.restore_test"] = {
        "latest": _with_age(latest_test, today) if latest_test else None,
        "latest_successful": _with_age(latest_ok, today) if latest_ok else None,
        "count": len(tests),
    }

    verifications = document.get("vendor_verifications", [])
    vendors = []
    for agreement in agreements:
        if not agreement["current"]:
            continue
        mine = [v for v in verifications if v["vendor"] == agreement["vendor"]]
        latest = _latest(mine)
        vendors.append(
            {
                "vendor": agreement["vendor"],
                "name": agreement.get("name", agreement["vendor"]),
                "latest": _with_age(latest, today) if latest else None,
            }
        )
    sections["org.vendor_verification"] = {"vendors": vendors}
    sections["org.manual_checks"] = _manual_checks(document.get("manual_checks", []), today)
    return sections


def _manual_checks(records: list[dict[str, Any]], today: dt.date) -> dict[str, Any]:
    """The latest record of each baseline policy checked by hand. Only the latest counts: a
    policy found met a year ago and
    not met last week is not met."""
    by_check: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_check.setdefault(record["check"], []).append(record)
    checks = {}
    for check, mine in sorted(by_check.items()):
        # On one day, a record that found the policy not met outweighs one that found it met.
        latest = max(mine, key=lambda r: (r["date"], not r["met"]))
        checks[check] = {"latest": _with_age(latest, today), "count": len(mine)}
    return {"checks": checks}
