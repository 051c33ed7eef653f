"""MTA-STS (RFC 8461): the `_mta-sts` record, the policy fetched over HTTPS from
`mta-sts.<domain>` (valid certificate, 200 only, no redirects, `text/plain`, at most 64 KiB),
its `version`, `mode`, `max_age` and `mx` patterns, checked against the domain's real MX hosts."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.dns.capped_http import capped_client
from connectors.dns.resolver import DnsLookupError, Resolver

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 section 3.2; a longer answer is refused as it arrives
_VERSION = re.compile(r"^\s*v\s*=\s*STSv1\s*(;|$)")
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


@dataclass
class Fetch:
    """How to reach policy hosts: the port (443) and the CA bundle to trust (None: the system's)."""

    port: int = 443
    ca_bundle: str | None = None
    timeout: float = 10.0


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: exact, or `*.` matching exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def parse_policy(text: str) -> tuple[dict[str, Any], list[str]]:
    fields: dict[str, Any] = {"mx": []}
    problems: list[str] = []
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            problems.append(f"line {line!r} is not key: value")
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            fields["mx"].append(value)
        elif key in ("version", "mode", "max_age"):
            fields[key] = value
    if fields.get("version") != "STSv1":
        problems.append(f"version is {fields.get('version')!r}, not STSv1")
    if fields.get("mode") not in ("enforce", "testing", "none"):
        problems.append(f"mode is {fields.get('mode')!r}, not enforce, testing or none")
    age = str(fields.get("max_age", ""))
    if not age.isdigit() or int(age) > 31_557_600:
        problems.append(f"max_age {age!r} is not a number of seconds up to 31557600")
    else:
        fields["max_age"] = int(age)
    if fields.get("mode") in ("enforce", "testing") and not fields["mx"]:
        problems.append("no mx pattern")
    return fields, problems


@dataclass
class Analysis:
    domain: str
    status: str = "valid"  # valid | invalid | none | error
    record: str | None = None
    record_id: str | None = None
    policy_url: str = ""
    http_status: int | None = None
    content_type: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    mx_hosts: list[str] = field(default_factory=list)
    uncovered_mx: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "status": self.status,
            "record": self.record,
            "id": self.record_id,
            "policy_url": self.policy_url,
            "http_status": self.http_status,
            "content_type": self.content_type,
            "mode": self.policy.get("mode"),
            "max_age": self.policy.get("max_age"),
            "mx_patterns": self.policy.get("mx", []),
            "mx_hosts": self.mx_hosts,
            "uncovered_mx": self.uncovered_mx,
            "problems": self.problems,
            "error": self.error,
        }


@functools.lru_cache(maxsize=8)
def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    # Loading trust stores costs milliseconds: once per run, not once per domain.
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


async def _fetch(host: str, addresses: list[str], fetch: Fetch) -> httpx.Response:
    context = _tls_context(fetch.ca_bundle)
    last: Exception | None = None
    async with capped_client(MAX_POLICY_BYTES, context, fetch.timeout) as client:
        for address in addresses:
            literal = f"[{address}]" if ":" in address else address
            try:
                return await client.get(
                    f"https://{literal}:{fetch.port}/.well-known/mta-sts.txt",
                    headers={"Host": host},
                    extensions={"sni_hostname": host},
                )
            except httpx.HTTPError as exc:
                last = exc
    raise last or httpx.ConnectError(f"no address for {host}")


async def analyse(domain: str, resolver: Resolver, mx_hosts: list[str], fetch: Fetch) -> Analysis:
    analysis = Analysis(domain.rstrip(".").lower(), mx_hosts=mx_hosts)
    host = f"mta-sts.{analysis.domain}"
    analysis.policy_url = f"https://{host}/.well-known/mta-sts.txt"
    try:
        answer = await resolver.query(f"_mta-sts.{analysis.domain}", "TXT")
        records = [r for r in answer.records if _VERSION.match(r)] if answer.status == "ok" else []
        if not records:
            analysis.status = "none"
            return analysis
        if len(records) > 1:
            analysis.status = "invalid"
            analysis.problems.append(
                f"{len(records)} MTA-STS records at _mta-sts.{analysis.domain}"
            )
            return analysis
        analysis.record = records[0]
        tags = {
            k.strip().lower(): v.strip()
            for k, _, v in (p.partition("=") for p in records[0].split(";") if "=" in p)
        }
        analysis.record_id = tags.get("id")
        if not analysis.record_id or not _ID.match(analysis.record_id):
            analysis.problems.append(f"id {analysis.record_id!r} is not 1-32 letters and digits")
        addresses = await resolver.addresses(host)
    except DnsLookupError as exc:
        analysis.status, analysis.error = "error", f"MTA-STS lookup failed: {exc}"
        return analysis
    if not addresses:
        analysis.status = "invalid"
        analysis.problems.append(f"{host} has no address: the policy cannot be fetched")
        return analysis
    try:
        response = await _fetch(host, addresses, fetch)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        analysis.status = "invalid"
        analysis.problems.append(f"fetching the policy failed: {reason}")
        return analysis
    analysis.http_status = response.status_code
    analysis.content_type = response.headers.get("Content-Type")
    if response.status_code != 200:
        where = response.headers.get("Location")
        analysis.problems.append(
            f"the policy URL answered {response.status_code}"
            + (f" (a redirect to {where}; redirects are not followed)" if where else "")
        )
    elif not (analysis.content_type or "").lower().startswith("text/plain"):
        analysis.problems.append(f"Content-Type is {analysis.content_type!r}, not text/plain")
    else:
        analysis.policy, problems = parse_policy(response.text)
        analysis.problems += problems
        patterns = analysis.policy.get("mx", [])
        analysis.uncovered_mx = [h for h in mx_hosts if not any(mx_matches(p, h) for p in patterns)]
    if analysis.problems:
        analysis.status = "invalid"
    return analysis
