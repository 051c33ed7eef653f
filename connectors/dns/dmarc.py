"""DMARC (RFC 7489, read with DMARCbis/RFC 9989's rules): policy discovery by DNS tree walk
rather than a public suffix list, the record's tags (`np`, `psd` and `t` understood; `pct`, `rf`
and `ri` tolerated), and whether each external report destination has authorised the reports
(`<domain>._report._dmarc.<destination>`)."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from connectors.dns.resolver import DnsLookupError, Resolver

# The tree walk never asks about more than this many labels (DMARCbis: 8 or more -> 7).
_MAX_LABELS = 7
_POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")
_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)


class DmarcSyntaxError(Exception):
    pass


def parse_record(text: str) -> dict[str, str]:
    """Tag -> value; DmarcSyntaxError when the record is not a valid DMARC record."""
    parts = list(text.split(";"))
    if parts and not parts[-1].strip():
        parts = parts[:-1]
    tags: dict[str, str] = {}
    for index, part in enumerate(parts):
        match = _TAG.match(part)
        if match is None:
            raise DmarcSyntaxError(f"{part.strip()!r} is not tag=value")
        tag, value = match.group(1).lower(), match.group(2)
        if index == 0 and (tag != "v" or value != "DMARC1"):
            raise DmarcSyntaxError("the record must start with v=DMARC1")
        if tag in tags:
            raise DmarcSyntaxError(f"tag {tag!r} appears twice")
        tags[tag] = value
    if not tags:
        raise DmarcSyntaxError("empty record")
    for key in ("p", "sp", "np"):
        if key in tags and tags[key].lower() not in _POLICIES:
            raise DmarcSyntaxError(f"{key}={tags[key]!r} is not none, quarantine or reject")
    for key in ("adkim", "aspf"):
        if key in tags and tags[key].lower() not in ("r", "s"):
            raise DmarcSyntaxError(f"{key}={tags[key]!r} is not r or s")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        raise DmarcSyntaxError(f"pct={tags['pct']!r} is not 0-100")
    if "t" in tags and tags["t"].lower() not in ("y", "n"):
        raise DmarcSyntaxError(f"t={tags['t']!r} is not y or n")
    if "psd" in tags and tags["psd"].lower() not in ("y", "n", "u"):
        raise DmarcSyntaxError(f"psd={tags['psd']!r} is not y, n or u")
    for key in ("rua", "ruf"):
        if key in tags:
            for uri in report_uris(tags[key]):
                if not uri.startswith(("mailto:", "https:", "http:")):
                    raise DmarcSyntaxError(f"{key} URI {uri!r} is not mailto: or https:")
    return tags


def report_uris(value: str) -> list[str]:
    """`mailto:a@x.org!10m, mailto:b@y.org` -> the URIs without size limits."""
    out = []
    for item in value.split(","):
        uri = item.strip()
        if not uri:
            continue
        out.append(uri.split("!", 1)[0])
    return out


def _destination_domain(uri: str) -> str | None:
    if uri.startswith("mailto:"):
        address = urllib.parse.unquote(uri[len("mailto:") :])
        return address.rsplit("@", 1)[1].lower().rstrip(".") if "@" in address else None
    return (urllib.parse.urlsplit(uri).hostname or "").lower() or None


def is_within(child: str, parent: str) -> bool:
    return child == parent or child.endswith("." + parent)


@dataclass
class Destination:
    uri: str
    domain: str | None
    external: bool
    authorised: bool | None  # None when internal (no authorisation needed)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "domain": self.domain,
            "external": self.external,
            "authorised": self.authorised,
        }


@dataclass
class Analysis:
    domain: str
    status: str = "valid"  # valid | invalid | none | error
    record: str | None = None
    found_at: str | None = None  # the name the record was found at (the domain or an ancestor)
    inherited: bool = False  # found at an ancestor by the tree walk
    organisational_domain: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rua: list[Destination] = field(default_factory=list)
    ruf: list[Destination] = field(default_factory=list)
    queried: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        policy = self.tags.get("p", "none" if self.record else None)
        return {
            "domain": self.domain,
            "status": self.status,
            "record": self.record,
            "found_at": self.found_at,
            "inherited": self.inherited,
            "organisational_domain": self.organisational_domain,
            "p": policy.lower() if policy else None,
            # The subdomain policies default to the next broader one, as receivers apply them.
            "sp": (self.tags.get("sp") or policy or "").lower() or None,
            "np": (self.tags.get("np") or self.tags.get("sp") or policy or "").lower() or None,
            "pct": int(self.tags["pct"]) if "pct" in self.tags else None,
            "testing": self.tags.get("t", "n").lower() == "y",
            "psd": self.tags.get("psd", "u").lower(),
            "adkim": self.tags.get("adkim", "r").lower(),
            "aspf": self.tags.get("aspf", "r").lower(),
            "rua": [d.to_json() for d in self.rua],
            "ruf": [d.to_json() for d in self.ruf],
            "unauthorised_destinations": [
                d.uri for d in (*self.rua, *self.ruf) if d.external and not d.authorised
            ],
            "problems": self.problems,
            "queried": self.queried,
            "error": self.error,
        }


async def _records(resolver: Resolver, name: str) -> list[str]:
    answer = await resolver.query(name, "TXT")
    if answer.status != "ok":
        return []
    return [r for r in answer.records if _VERSION.match(r)]


def walk_names(domain: str) -> list[str]:
    """The names the tree walk asks about, nearest first: the domain, then (past 7 labels,
    straight to the rightmost 7) each parent down to two labels."""
    labels = domain.split(".")
    names = [domain]
    if len(labels) > _MAX_LABELS:
        labels = labels[-_MAX_LABELS:]
        names.append(".".join(labels))
    while len(labels) > 2:
        labels = labels[1:]
        names.append(".".join(labels))
    return list(dict.fromkeys(names))


async def organisational_domain(domain: str, resolver: Resolver) -> str:
    """DMARCbis organisational-domain discovery by the same tree walk: the nearest record with
    psd=n names it; a record with psd=y makes it the name one label below; otherwise it is the
    name with the fewest labels that publishes a record (the domain itself if none does)."""
    labels = domain.split(".")
    found: list[str] = []
    for name in walk_names(domain):
        records = await _records(resolver, f"_dmarc.{name}")
        if len(records) != 1:
            continue
        try:
            psd = parse_record(records[0]).get("psd", "u").lower()
        except DmarcSyntaxError:
            continue
        if psd == "n":
            return name
        if psd == "y":
            depth = len(name.split(".")) + 1
            return ".".join(labels[-depth:]) if depth <= len(labels) else domain
        found.append(name)
    return min(found, key=lambda n: n.count("."), default=domain)


async def _authorised(resolver: Resolver, domain: str, destination: str) -> bool:
    answer = await resolver.query(f"{domain}._report._dmarc.{destination}", "TXT")
    return answer.status == "ok" and any(_VERSION.match(r) for r in answer.records)


async def analyse(domain: str, resolver: Resolver) -> Analysis:
    analysis = Analysis(domain.rstrip(".").lower())
    try:
        for name in walk_names(analysis.domain):
            analysis.queried.append(f"_dmarc.{name}")
            records = await _records(resolver, f"_dmarc.{name}")
            if not records:
                continue
            analysis.found_at = name
            analysis.inherited = name != analysis.domain
            if len(records) > 1:
                analysis.status = "invalid"
                analysis.problems.append(f"_dmarc.{name} publishes {len(records)} DMARC records")
                return analysis
            analysis.record = records[0]
            try:
                analysis.tags = parse_record(records[0])
            except DmarcSyntaxError as exc:
                analysis.status = "invalid"
                analysis.problems.append(str(exc))
                return analysis
            await _destinations(analysis, resolver, name)
            return analysis
    except DnsLookupError as exc:
        analysis.status = "error"
        analysis.error = f"DMARC lookup failed: {exc}"
        return analysis
    analysis.status = "none"
    return analysis


async def _destinations(analysis: Analysis, resolver: Resolver, policy_domain: str) -> None:
    # A destination inside the organisational domain needs no authorisation (mail for
    # notify.example.org reporting to example.org is the organisation reporting to itself).
    organisation = await organisational_domain(analysis.domain, resolver)
    analysis.organisational_domain = organisation
    for key, bucket in (("rua", analysis.rua), ("ruf", analysis.ruf)):
        for uri in report_uris(analysis.tags.get(key, "")):
            target = _destination_domain(uri)
            external = target is not None and not (
                is_within(target, policy_domain) or is_within(target, organisation)
            )
            authorised = None
            if external and target is not None:
                authorised = await _authorised(resolver, policy_domain, target)
            bucket.append(Destination(uri, target, external, authorised))
