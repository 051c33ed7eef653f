"""findings.ocsf.json: every result as an OCSF 1.5.0 Compliance Finding (class 2003), the form
SIEMs and security lakes ingest (Prowler writes its findings the same way). Field names and
enumerations follow the OCSF schema; what OCSF has no field for (responsibility, the waiver, the
pointer to the evidence) goes under `unmapped`."""

from __future__ import annotations

from auditor import __version__
from auditor.jsonutil import JSON
from auditor.reports.common import ReportInput
from auditor.results import Result
from auditor.timeutil import parse_isoz

OCSF_VERSION = "1.5.0"
_FINDINGS_CATEGORY = 2  # category_uid: Findings
_COMPLIANCE_FINDING = 2003  # class_uid
_CREATE = 1  # activity_id: the run created this finding
_SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
# The finding's own workflow status (status_id): what someone must still act on is New; an
# accepted waiver Suppressed; a pass Resolved.
_FINDING_STATUS = {
    "fail": (1, "New"),
    "error": (1, "New"),
    "waived": (3, "Suppressed"),
    "pass": (4, "Resolved"),
    "inherited": (4, "Resolved"),
    "not_applicable": (99, "Other"),
}
# The compliance verdict (compliance.status_id): Pass 1, Fail 3, Unknown 0 (could not be
# judged), Other 99 (not applicable).
_COMPLIANCE_STATUS = {
    "pass": 1,
    "inherited": 1,
    "fail": 3,
    "waived": 3,
    "error": 0,
    "not_applicable": 99,
}
_STANDARD = "HIPAA Security Rule (45 CFR Part 164, Subpart C)"


def _finding(report: ReportInput, result: Result, index: int, millis: int) -> dict[str, JSON]:
    run = report.results.run
    severity_id = _SEVERITY_ID.get(result.severity, 0)
    status_id, status = _FINDING_STATUS.get(result.status, (0, "Unknown"))
    verdict_id = _COMPLIANCE_STATUS.get(result.status, 0)
    policy = report.policy(result)
    finding: dict[str, JSON] = {
        "activity_id": _CREATE,
        "activity_name": "Create",
        "category_uid": _FINDINGS_CATEGORY,
        "category_name": "Findings",
        "class_uid": _COMPLIANCE_FINDING,
        "class_name": "Compliance Finding",
        "type_uid": _COMPLIANCE_FINDING * 100 + _CREATE,
        "type_name": "Compliance Finding: Create",
        "time": millis,
        "severity_id": severity_id,
        "severity": _SEVERITY_NAME.get(severity_id, "Unknown"),
        "status_id": status_id,
        "status": status,
        "status_code": result.status,
        "message": result.reason,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "commsaudit", "vendor_name": "commsaudit", "version": __version__},
            "event_code": result.control,
            "uid": f"{run.id}/{index}",
            "correlation_uid": run.id,
            "profiles": ["cloud"] if result.platform in ("aws", "m365") else [],
        },
        "finding_info": {
            "uid": f"commsaudit/{result.control}/{result.subject}",
            "title": result.title,
            "desc": result.reason,
            "types": [result.category],
            "created_time": millis,
        },
        "compliance": {
            "control": result.control,
            "requirements": list(result.citations),
            "standards": [_STANDARD],
            "status_id": verdict_id,
            "category": result.category,
        },
        "resources": [{"uid": result.subject, "name": result.subject, "type": result.platform}],
        "unmapped": {
            "responsibility": result.responsibility,
            "evidence": f"results.json#/results/{index}/evidence",
            "waiver": result.waiver or None,
        },
    }
    if policy is not None and policy.remediation_summary:
        finding["remediation"] = {
            "desc": policy.remediation_summary,
            "references": list(policy.remediation_references),
        }
    return finding


def render(report: ReportInput) -> list[dict[str, JSON]]:
    """One finding per result, in results.json's order."""
    millis = int(parse_isoz(report.results.run.started_at).timestamp() * 1000)
    return [
        _finding(report, result, index, millis)
        for index, result in enumerate(report.results.results)
    ]
