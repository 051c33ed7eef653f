"""The snapshot: normalised settings, one section per (name, subject). It is the contract
between connectors and policies, and it is what `verify` re-evaluates."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from auditor.jsonutil import JSON, loads_strict
from auditor.model.errors import InputError
from auditor.model.section import Platform, Section, SubjectKind
from auditor.resources import schema_path
from auditor.timeutil import isoz, parse_isoz

FORMAT = "commsaudit/snapshot/v1"


@dataclass
class SourceStatus:
    """How one connector's collection went."""

    title: str
    status: str  # "ok" | "error"
    platforms: list[str]
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    scope: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        return {
            "title": self.title,
            "status": self.status,
            "platforms": self.platforms,
            "started_at": isoz(self.started_at) if self.started_at else None,
            "finished_at": isoz(self.finished_at) if self.finished_at else None,
            "error": self.error,
            "scope": self.scope,
        }


@dataclass
class Snapshot:
    collected_at: dt.datetime
    # platform -> subject kind -> subjects, in the order they were found.
    scope: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sources: dict[str, SourceStatus] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    # Sections computed from other sections after collection (see auditor.derive).
    derived: set[tuple[str, str]] = field(default_factory=set)
    _index_cache: dict[tuple[str, str], list[Section]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _index_len: int = field(default=-1, init=False, repr=False, compare=False)

    def add_subject(self, platform: Platform, kind: SubjectKind, subject: str) -> None:
        subjects = self.scope.setdefault(platform, {}).setdefault(kind, [])
        if subject not in subjects:
            subjects.append(subject)

    def section(self, name: str, subject: str) -> Section | None:
        for section in self._index().get((name, subject), ()):
            return section
        return None

    def _index(self) -> dict[tuple[str, str], list[Section]]:
        # Sections are only ever appended, so the count tells whether the index is stale;
        # evaluation reads far more often than collection writes.
        if self._index_len != len(self.sections):
            index: dict[tuple[str, str], list[Section]] = {}
            for section in self.sections:
                index.setdefault((section.name, section.subject), []).append(section)
            self._index_cache = index
            self._index_len = len(self.sections)
        return self._index_cache

    def failed_sources(self, platform: str) -> list[tuple[str, SourceStatus]]:
        return [
            (name, src)
            for name, src in self.sources.items()
            if src.status == "error" and platform in src.platforms
        ]

    def to_json(self) -> dict[str, JSON]:
        return {
            "format": FORMAT,
            "collected_at": isoz(self.collected_at),
            "scope": self.scope,
            "sources": {name: src.to_json() for name, src in self.sources.items()},
            "sections": [self._section_json(s) for s in self.sections],
        }

    def _section_json(self, section: Section) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "name": section.name,
            "platform": section.platform,
            "subject": section.subject,
            "status": section.status,
            "source": section.source,
            "collected_at": isoz(section.collected_at),
            "connector": section.connector,
            "raw": list(section.raw),
        }
        if section.reason is not None:
            out["reason"] = section.reason
        if (section.name, section.subject) in self.derived:
            out["derived"] = True
        out["data"] = section.data
        return out


@cache
def _snapshot_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path("snapshot.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def snapshot_from_json(document: JSON, where: str, *, connector: str | None = None) -> Snapshot:
    """Read a snapshot document; InputError naming `where` and the path when it is malformed."""
    error = jsonschema.exceptions.best_match(_snapshot_validator().iter_errors(document))
    if error is not None:
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        raise InputError(f"not a valid snapshot at {path}: {error.message}", where=where)
    default_time = document.get("collected_at")
    try:
        collected_at = parse_isoz(default_time) if default_time else dt.datetime.now(dt.UTC)
        snapshot = Snapshot(collected_at=collected_at)
        for platform, kinds in document.get("scope", {}).items():
            for kind, subjects in kinds.items():
                for subject in subjects:
                    snapshot.add_subject(platform, kind, subject)
        for name, src in document.get("sources", {}).items():
            snapshot.sources[name] = SourceStatus(
                title=src.get("title", name),
                status=src["status"],
                platforms=list(src.get("platforms", [])),
                started_at=parse_isoz(src["started_at"]) if src.get("started_at") else None,
                finished_at=parse_isoz(src["finished_at"]) if src.get("finished_at") else None,
                error=src.get("error"),
                scope=src.get("scope", {}),
            )
        for item in document["sections"]:
            when = item.get("collected_at")
            snapshot.sections.append(
                Section(
                    name=item["name"],
                    platform=item["platform"],
                    subject=item["subject"],
                    status=item["status"],
                    data=item["data"],
                    source=item["source"],
                    collected_at=parse_isoz(when) if when else collected_at,
                    raw=tuple(item.get("raw", ())),
                    reason=item.get("reason"),
                    connector=connector or item.get("connector", ""),
                )
            )
            if item.get("derived"):
                snapshot.derived.add((item["name"], item["subject"]))
    except ValueError as exc:
        raise InputError(f"not a valid snapshot: bad timestamp ({exc})", where=where) from exc
    return snapshot


def read_snapshot(path: Path) -> Snapshot:
    try:
        # NaN and Infinity are not JSON: they would pass every numeric limit a policy sets.
        document = loads_strict(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the snapshot: {exc.strerror}", where=str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the snapshot is not valid JSON: {exc}", where=str(path)) from exc
    return snapshot_from_json(document, str(path))
