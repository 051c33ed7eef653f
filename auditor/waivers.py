"""Waivers: an accepted, approved, time-limited exception for a failing control."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from auditor.jsonutil import JSON


@dataclass(frozen=True)
class Waiver:
    control: str
    reason: str
    approved_by: str
    expires: dt.date
    subject: str | None = None
    index: int = 0  # position in config, so messages can point at `[[waivers]] #3`

    @classmethod
    def from_json(cls, data: dict[str, Any], index: int = 0) -> Waiver:
        return cls(
            control=data["control"],
            subject=data.get("subject"),
            reason=data["reason"],
            approved_by=data["approved_by"],
            expires=dt.date.fromisoformat(data["expires"]),
            index=index,
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"control": self.control}
        if self.subject is not None:
            out["subject"] = self.subject
        out.update(
            reason=self.reason, approved_by=self.approved_by, expires=self.expires.isoformat()
        )
        return out

    def label(self) -> str:
        target = f"{self.control} for {self.subject}" if self.subject else self.control
        return f"[[waivers]] #{self.index + 1} ({target})"

    def matches(self, control: str, subject: str) -> bool:
        return self.control == control and (self.subject is None or self.subject == subject)

    def expired(self, today: dt.date) -> bool:
        """A waiver holds through the whole of its expiry day."""
        return today > self.expires
