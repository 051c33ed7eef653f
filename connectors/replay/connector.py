"""The replay connector: sections recorded earlier (a snapshot file, or a slice of one), served
as if collected now. The demo uses it for the platforms whose connectors are not in this build
yet; policy authors use it to develop against a known snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from auditor.model.catalogue import Catalogue
from auditor.model.errors import InputError
from auditor.model.section import PLATFORMS, Platform, SubjectKind
from auditor.model.snapshot import Snapshot, snapshot_from_json
from connectors.base import CollectContext, Connector, RawRecord
from connectors.registry import catalogue


class ReplayConnector(Connector):
    name: ClassVar[str] = "replay"
    title: ClassVar[str] = "Recorded sections"
    platforms: ClassVar[tuple[Platform, ...]] = PLATFORMS
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
                "description": "Snapshot files (format commsaudit/snapshot/v1) whose "
                "sections are replayed.",
            },
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.paths = [(base_dir / f).resolve() for f in config["files"]]
        self._loaded: list[tuple[Path, bytes, Snapshot]] = []
        self._catalogue: Catalogue | None = None

    def _load(self) -> list[tuple[Path, bytes, Snapshot]]:
        loaded = []
        for path in self.paths:
            try:
                content = path.read_bytes()
                document = json.loads(content)
            except OSError as exc:
                raise InputError(
                    f"cannot read the recorded sections: {exc.strerror}", where=str(path)
                ) from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"not valid JSON: {exc}", where=str(path)) from exc
            snapshot = snapshot_from_json(document, str(path), connector=self.name)
            loaded.append((path, content, snapshot))
        return loaded

    def preflight(self, now: Any) -> None:
        self._loaded = self._load()

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        planned: list[tuple[Platform, SubjectKind, str]] = []
        for _path, _content, snapshot in self._loaded:
            for platform, kinds in snapshot.scope.items():
                for kind, subjects in kinds.items():
                    planned.extend((platform, kind, s) for s in subjects)  # type: ignore[misc]
        return planned

    def covered_platforms(self) -> list[Platform]:
        """The platforms the recorded files actually hold, not every platform it could."""
        found: list[Platform] = []
        for _path, _content, snapshot in self._loaded:
            for platform in snapshot.scope:
                if platform not in found:
                    found.append(platform)  # type: ignore[arg-type]
        return found

    def scope(self) -> dict[str, Any]:
        return {"files": [p.name for p in self.paths]}

    async def collect(self, ctx: CollectContext) -> None:
        for path, content, snapshot in self._loaded or self._load():
            raw_path = ctx.add_raw(
                RawRecord(
                    path=f"replay/{path.name}",
                    source=f"replay:{path.name}",
                    body=content,
                    collected_at=ctx.now,
                    request={"method": "READ", "file": path.name},
                )
            )
            for platform, kinds in snapshot.scope.items():
                for kind, subjects in kinds.items():
                    for subject in subjects:
                        ctx.add_subject(platform, kind, subject)  # type: ignore[arg-type]
            for section in snapshot.sections:
                if (section.name, section.subject) in snapshot.derived:
                    # Computed from other sections once collection is done: this run derives
                    # it again from the replayed inputs, so a copy would only duplicate it.
                    continue
                status, data, reason = section.status, section.data, section.reason
                refused = self._refused(section.name, data) if status == "ok" else None
                if refused is not None:
                    status, data, reason = "error", None, refused
                ctx.add_section(
                    section.name,
                    platform=section.platform,
                    subject=section.subject,
                    data=data,
                    # Say plainly that this was not read from the platform during this run.
                    source=f"{section.source} (replayed from {path.name})",
                    raw=(raw_path,),
                    status=status,
                    reason=reason,
                    collected_at=section.collected_at,
                )

    def _refused(self, name: str, data: Any) -> str | None:
        if self._catalogue is None:
            self._catalogue = catalogue()
        return self._catalogue.refusal(name, data, "the replayed data")
