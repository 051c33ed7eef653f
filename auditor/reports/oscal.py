"""oscal/assessment-results.json: the run as OSCAL 1.1.2 assessment results.

One observation per collected section (method TEST, commsaudit as the origin, evidence pointing
into the bundle with SHA-256 hashes in back-matter) and one finding per control and subject.
UUIDs are derived from the run id, so the same run always yields the same document.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from auditor import __version__
from auditor.jsonutil import JSON
from auditor.model.snapshot import Snapshot
from auditor.reports.common import ReportInput, md_text

OSCAL_VERSION = "1.1.2"
_STATE = {
    "pass": "satisfied",
    "inherited": "satisfied",
    "fail": "not-satisfied",
    "error": "not-satisfied",
    "waived": "not-satisfied",
}
_REASON = {"pass": "pass", "inherited": "pass", "fail": "fail", "error": "other", "waived": "fail"}


# OSCAL's titles and descriptions are Markdown ("markup-line", "markup-multiline"): what the
# run read (a reason quoting a tenant's policy name, a subject, a source) goes in escaped as
# report.md escapes it, so that a viewer shows a name such as `[x](https://elsewhere)` or
# `<img src=...>` as itself, not as a link or an image.
_md = md_text


def _token(text: str) -> str:
    """OSCAL tokens: letters, digits, '.', '-', '_' and no leading digit."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    return cleaned if re.match(r"^[A-Za-z_]", cleaned) else f"c-{cleaned}"


def render(report: ReportInput, snapshot: Snapshot, file_hashes: dict[str, str]) -> dict[str, JSON]:
    run = report.results.run
    root = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:commsaudit:run:{run.id}")

    def uid(*parts: str) -> str:
        # Derived, so a run always yields the same document, but shaped as version 4: OSCAL
        # accepts 4 and 5, and tools that follow references (compliance-trestle) know only 4.
        derived = uuid.uuid5(root, "/".join(parts))
        return str(uuid.UUID(bytes=derived.bytes, version=4))

    tool_uuid = uid("tool")
    resources: dict[str, dict[str, Any]] = {}

    def resource(path: str) -> str | None:
        digest = file_hashes.get(path)
        if digest is None:
            return None
        if path not in resources:
            resources[path] = {
                "uuid": uid("resource", path),
                "title": path,
                "rlinks": [{"href": path, "hashes": [{"algorithm": "SHA-256", "value": digest}]}],
            }
        return str(resources[path]["uuid"])

    plan = uid("resource", "policies")
    observations = []
    observation_of: dict[tuple[str, str], str] = {}
    for section in snapshot.sections:
        key = (section.name, section.subject)
        if key in observation_of:
            continue
        obs_uuid = uid("observation", *key)
        observation_of[key] = obs_uuid
        evidence = [
            {"href": f"#{resource('snapshot.json')}", "description": _md(f"section {section.name}")}
        ]
        for raw in section.raw:
            ref = resource(raw)
            if ref:
                evidence.append({"href": f"#{ref}", "description": _md(f"raw response {raw}")})
        observations.append(
            {
                "uuid": obs_uuid,
                "title": _md(f"{section.name} for {section.subject}"),
                "description": _md(f"Collected from {section.source}; status {section.status}."),
                "methods": ["TEST"],
                "origins": [{"actors": [{"type": "tool", "actor-uuid": tool_uuid}]}],
                "subjects": [
                    {
                        "subject-uuid": uid("subject", section.subject),
                        "type": "resource",
                        "title": _md(section.subject),
                    }
                ],
                "relevant-evidence": evidence,
                "collected": section.collected_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    findings = []
    for result in report.results.results:
        if result.status == "not_applicable":
            continue
        related = sorted(
            {
                observation_of[(e.section, result.subject)]
                for e in result.evidence
                if (e.section, result.subject) in observation_of
            }
        )
        finding: dict[str, Any] = {
            "uuid": uid("finding", result.control, result.subject),
            "title": _md(f"{result.control} for {result.subject}"),
            "description": _md(result.reason),
            "props": [
                {"name": "status", "ns": "https://commsaudit.invalid/ns", "value": result.status},
                {
                    "name": "severity",
                    "ns": "https://commsaudit.invalid/ns",
                    "value": result.severity,
                },
            ],
            "target": {
                "type": "objective-id",
                "target-id": _token(result.control),
                "status": {"state": _STATE[result.status], "reason": _REASON[result.status]},
            },
        }
        if related:
            finding["related-observations"] = [{"observation-uuid": u} for u in related]
        findings.append(finding)

    back_matter_resources = [
        {
            "uuid": plan,
            "title": "Policies used (the assessment plan)",
            "rlinks": [{"href": "policies/"}],
        },
        *resources.values(),
    ]
    return {
        "assessment-results": {
            "uuid": uid("assessment-results"),
            "metadata": {
                "title": _md(report.title),
                "last-modified": run.finished_at,
                "version": __version__,
                "oscal-version": OSCAL_VERSION,
            },
            "import-ap": {"href": f"#{plan}"},
            "local-definitions": {
                "activities": [
                    {
                        "uuid": uid("activity"),
                        "title": "commsaudit automated evaluation",
                        "description": f"Settings collected by commsaudit {__version__} and "
                        f"evaluated against policy set {run.policy_digest}.",
                    }
                ]
            },
            "results": [
                {
                    "uuid": uid("result"),
                    "title": f"commsaudit run {run.id}",
                    "description": _md(f"Profile {run.profile}."),
                    "start": run.started_at,
                    "end": run.finished_at,
                    "local-definitions": {
                        "components": [
                            {
                                "uuid": tool_uuid,
                                "type": "software",
                                "title": "commsaudit",
                                "description": f"commsaudit {__version__}, policy-as-code auditor.",
                                "status": {"state": "operational"},
                            }
                        ]
                    },
                    "reviewed-controls": {"control-selections": [{"include-all": {}}]},
                    "observations": observations,
                    "findings": findings,
                }
            ],
            "back-matter": {"resources": back_matter_resources},
        }
    }
