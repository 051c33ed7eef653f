"""A section: one normalised slice of settings for one subject, what policies evaluate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, get_args

SectionStatus = Literal["ok", "error", "not_applicable"]
# Adding a platform starts here: the snapshot and policy schemas take their lists from this one.
Platform = Literal["m365", "aws", "dns", "pulumi", "org"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)
SubjectKind = Literal["tenant", "domain", "account", "region", "stack", "organisation"]


@dataclass(frozen=True)
class Section:
    """A normalised slice of settings for one subject: what policies evaluate."""

    name: str
    platform: Platform
    subject: str
    status: SectionStatus
    data: Any
    source: str
    collected_at: dt.datetime
    raw: tuple[str, ...] = ()
    reason: str | None = None
    connector: str = ""
