"""What the connector read, one entry per recorded path, whether it came over the network or
from a recorded tenant directory. Normalisation works on these and nothing else."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.jsonutil import loads_strict


def compact_json(data: Any) -> bytes:
    """`data` as the evidence keeps a parsed answer: compact JSON, UTF-8 as it came."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Fetched:
    """One recorded path, such as `graph/v1.0/users`, `exo/Get-Mailbox` or
    `compliance/Get-DlpCompliancePolicy`.

    `data` is the body with every page merged (collections as `{"value": [...]}`, cmdlets as a
    list); `status` is the HTTP status of the last answer; `error` says, for a person, why there
    is no data (and names the missing permission or licence when that is the cause)."""

    path: str
    status: int
    data: Any
    collected_at: dt.datetime
    error: str | None = None
    unlicensed: bool = False
    # The merged body as bytes, when it could be assembled from the answers' own bytes (items
    # exactly as received); otherwise the evidence is `data` serialised again.
    body: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 300

    @property
    def source(self) -> str:
        kind, _, rest = self.path.partition("/")
        if kind == "graph":
            return f"graph:GET /{rest}"
        if kind == "sharepoint":
            return f"sharepoint:GET /_api/{rest}"
        return f"{kind}:{rest}"

    @property
    def raw_path(self) -> str:
        return f"raw/m365/{self.path}.json"


FetchedMap = Mapping[str, Fetched]


def read_recorded_tenant(
    directory: Path, now: dt.datetime
) -> tuple[dict[str, Any], dict[str, Fetched]]:
    """tenant.json and every recorded path of a recorded-tenant directory."""
    tenant = loads_strict((directory / "tenant.json").read_text(encoding="utf-8"))
    fetched: dict[str, Fetched] = {}
    for path in sorted(directory.rglob("*.json")):
        relative = path.relative_to(directory).as_posix()
        if relative == "tenant.json":
            continue
        key = relative.removesuffix(".json")
        fetched[key] = Fetched(key, 200, loads_strict(path.read_text(encoding="utf-8")), now)
    return tenant, fetched
