"""SMTP TLS reporting (RFC 8460): one `v=TLSRPTv1` record at `_smtp._tls.<domain>` naming
where failure reports go (`mailto:` or `https:`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from connectors.dns.resolver import DnsLookupError, Resolver

_VERSION = re.compile(r"^\s*v\s*=\s*TLSRPTv1\s*(;|$)")


@dataclass
class Analysis:
    domain: str
    status: str = "valid"  # valid | invalid | none | error
    record: str | None = None
    rua: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "status": self.status,
            "record": self.record,
            "rua": self.rua,
            "problems": self.problems,
            "error": self.error,
        }


def parse_record(text: str) -> tuple[list[str], list[str]]:
    """(report URIs, problems)."""
    problems = []
    tags: dict[str, str] = {}
    for part in [p for p in text.split(";") if p.strip()]:
        key, sep, value = part.partition("=")
        if not sep:
            problems.append(f"{part.strip()!r} is not key=value")
            continue
        tags[key.strip().lower()] = value.strip()
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if not uris:
        problems.append("no rua: reports have nowhere to go")
    for uri in uris:
        if not uri.lower().startswith(("mailto:", "https:")):
            problems.append(f"rua {uri!r} is neither mailto: nor https:")
    return uris, problems


async def analyse(domain: str, resolver: Resolver) -> Analysis:
    analysis = Analysis(domain.rstrip(".").lower())
    try:
        answer = await resolver.query(f"_smtp._tls.{analysis.domain}", "TXT")
    except DnsLookupError as exc:
        analysis.status, analysis.error = "error", f"TLS-RPT lookup failed: {exc}"
        return analysis
    records = [r for r in answer.records if _VERSION.match(r)] if answer.status == "ok" else []
    if not records:
        analysis.status = "none"
        return analysis
    if len(records) > 1:
        analysis.status = "invalid"
        analysis.problems.append(f"{len(records)} TLS-RPT records at _smtp._tls.{analysis.domain}")
        return analysis
    analysis.record = records[0]
    analysis.rua, analysis.problems = parse_record(records[0])
    if analysis.problems:
        analysis.status = "invalid"
    return analysis
