"""Results and the results.json format (commsaudit/results/v1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditor.jsonutil import JSON

FORMAT = "commsaudit/results/v1"
STATUSES = ("pass", "fail", "error", "not_applicable", "waived", "inherited")
SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass
class Evidence:
    """One fact behind a verdict: what was read, from where, when, and what it showed."""

    source: str
    section: str
    pointer: str
    value: JSON
    collected_at: str | None
    message: str | None = None
    raw: list[str] = field(default_factory=list)
    # For a failure inside a list item (one user, one policy, one vendor): that whole item, so
    # the evidence says which one without a trip to the snapshot.
    context: JSON = None
    context_pointer: str | None = None

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "source": self.source,
            "section": self.section,
            "pointer": self.pointer,
            "value": self.value,
            "collected_at": self.collected_at,
        }
        if self.message is not None:
            out["message"] = self.message
        if self.context_pointer is not None:
            out["context_pointer"] = self.context_pointer
            out["context"] = self.context
        if self.raw:
            out["raw"] = self.raw
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(
            source=data["source"],
            section=data.get("section", ""),
            pointer=data.get("pointer", ""),
            value=data.get("value"),
            collected_at=data.get("collected_at"),
            message=data.get("message"),
            raw=list(data.get("raw", [])),
            context=data.get("context"),
            context_pointer=data.get("context_pointer"),
        )


@dataclass
class Result:
    control: str
    subject: str
    status: str
    severity: str
    responsibility: str
    citations: list[str]
    title: str
    category: str
    platform: str
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    remediation: str = ""
    waiver: dict[str, JSON] | None = None
    scuba: list[str] = field(default_factory=list)  # CISA SCuBA baseline policy ids

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "control": self.control,
            "subject": self.subject,
            "status": self.status,
            "severity": self.severity,
            "responsibility": self.responsibility,
            "citations": self.citations,
            "title": self.title,
            "category": self.category,
            "platform": self.platform,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
            "remediation": self.remediation,
        }
        if self.waiver is not None:
            out["waiver"] = self.waiver
        if self.scuba:
            out["scuba"] = list(self.scuba)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(
            control=data["control"],
            subject=data["subject"],
            status=data["status"],
            severity=data.get("severity", "medium"),
            responsibility=data.get("responsibility", "customer"),
            citations=list(data.get("citations", [])),
            title=data.get("title", data["control"]),
            category=data.get("category", ""),
            platform=data.get("platform", ""),
            reason=data.get("reason", ""),
            evidence=[Evidence.from_json(e) for e in data.get("evidence", [])],
            remediation=data.get("remediation", ""),
            scuba=list(data.get("scuba", [])),
            waiver=data.get("waiver"),
        )


@dataclass
class RunInfo:
    id: str
    started_at: str
    finished_at: str
    tool_version: str
    profile: str
    policy_digest: str
    evaluated_at: str
    validator: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tool_version": self.tool_version,
            "profile": self.profile,
            "policy_digest": self.policy_digest,
            "evaluated_at": self.evaluated_at,
            "validator": self.validator,
            "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        return cls(
            id=data["id"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            tool_version=data.get("tool_version", ""),
            profile=data.get("profile", ""),
            policy_digest=data.get("policy_digest", ""),
            evaluated_at=data.get("evaluated_at", data["finished_at"]),
            validator=data.get("validator", ""),
            warnings=list(data.get("warnings", [])),
        )


@dataclass
class Results:
    run: RunInfo
    results: list[Result]

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    def exit_code(self, *, allow_errors: bool = False) -> int:
        """0 all fine, 1 a control failed, 3 none failed but one could not be judged (`error`);
        `allow_errors` turns that 3 into 0."""
        counts = self.summary
        if counts["fail"]:
            return 1
        return 3 if counts["error"] and not allow_errors else 0

    def to_json(self) -> dict[str, JSON]:
        return {
            "format": FORMAT,
            "run": self.run.to_json(),
            "results": [r.to_json() for r in self.results],
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        return cls(
            run=RunInfo.from_json(data["run"]),
            results=[Result.from_json(r) for r in data["results"]],
        )
