"""UTC timestamps in the one text form every commsaudit file uses: ISO 8601 with a Z."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def isoz(moment: dt.datetime) -> str:
    """`2026-11-27T22:33:56Z` (seconds precision, UTC)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: commsaudit keeps every time in UTC")
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_isoz(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
