"""Waivers: an accepted, approved, time-limited exception for a failing control."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from auditor.jsonutil import JSON

# How long a waiver may last, from its approval (`[policies] waiver_max_days`), and how close to
# its expiry a run starts to say so.
DEFAULT_WAIVER_MAX_DAYS = 365
EXPIRY_NOTICE_DAYS = 30


@dataclass(frozen=True)
class Waiver:
    control: str
    reason: str
    approved_by: str
    expires: dt.date
    subject: str | None = None
    index: int = 0  # position in config, so messages can point at `[[waivers]] #3`
    approved_on: dt.date | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], index: int = 0) -> Waiver:
        return cls(
            control=data["control"],
            subject=data.get("subject"),
            reason=data["reason"],
            approved_by=data["approved_by"],
            expires=dt.date.fromisoformat(data["expires"]),
            index=index,
            approved_on=(
                dt.date.fromisoformat(data["approved_on"]) if data.get("approved_on") else None
            ),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"control": self.control}
        if self.subject is not None:
            out["subject"] = self.subject
        out.update(
            reason=self.reason, approved_by=self.approved_by, expires=self.expires.isoformat()
        )
        if self.approved_on is not None:
            out["approved_on"] = self.approved_on.isoformat()
        return out

    def label(self) -> str:
        target = f"{self.control} for {self.subject}" if self.subject else self.control
        return f"[[waivers]] #{self.index + 1} ({target})"

    def matches(self, control: str, subject: str) -> bool:
        return self.control == control and (self.subject is None or self.subject == subject)

    def expired(self, today: dt.date) -> bool:
        """A waiver holds through the whole of its expiry day."""
        return today > self.expires

    def lifetime_problem(self, today: dt.date, max_days: int) -> str | None:
        """Why this waiver is longer-lived than a waiver may be, or None. A waiver's life counts
        from its approval (`approved_on`), or from the run's date when that is not given: either
        way an expiry in 9999 is a permanent exception in disguise, and is refused."""
        start = self.approved_on or today
        if self.approved_on is not None and self.approved_on > today:
            return f"approved_on {self.approved_on.isoformat()} is later than today, {today}"
        days = (self.expires - start).days
        if days <= max_days:
            return None
        since = f"its approval on {start.isoformat()}" if self.approved_on else "today"
        return (
            f"expires {self.expires.isoformat()}, {days} days after {since}; a waiver may last "
            f"at most {max_days} days"
        )

    def days_left(self, today: dt.date) -> int:
        """Days until it lapses: 0 on its expiry day (it still holds then)."""
        return (self.expires - today).days
