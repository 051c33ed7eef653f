"""DKIM public keys in DNS: `<selector>._domainkey.<domain>`, following CNAMEs (Microsoft 365
and SES publish selectors as CNAMEs into their own zones), parsed as `v=DKIM1` key records with
the key type and, for RSA, the key length."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from connectors.dns.resolver import DnsLookupError, Resolver


def parse_record(text: str) -> tuple[dict[str, str], list[str]]:
    tags: dict[str, str] = {}
    problems: list[str] = []
    parts = [p for p in text.split(";") if p.strip()]
    for index, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            problems.append(f"{part.strip()!r} is not tag=value")
            continue
        key = key.strip().lower()
        if key in tags:
            problems.append(f"tag {key!r} appears twice")
        tags[key] = "".join(value.split())
        if key == "v" and index != 0:
            problems.append("v= must come first")
    if "v" in tags and tags["v"] != "DKIM1":
        problems.append(f"v={tags['v']!r} is not DKIM1")
    if "p" not in tags:
        problems.append("no p= (public key)")
    return tags, problems


def key_facts(tags: dict[str, str]) -> tuple[str, int | None, list[str]]:
    """(key type, RSA bits, problems)."""
    kind = tags.get("k", "rsa").lower()
    data = tags.get("p", "")
    if not data:
        return kind, None, ["the key is revoked (empty p=)"]
    try:
        der = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return kind, None, ["p= is not base64"]
    if kind == "ed25519":
        return kind, None, [] if len(der) == 32 else ["p= is not a 32-byte ed25519 key"]
    try:
        key = load_der_public_key(der)
    except ValueError:
        return kind, None, ["p= is not a public key"]
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size, []
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", None, []
    return kind, None, [f"unsupported key type {type(key).__name__}"]


@dataclass
class Selector:
    selector: str
    name: str
    status: str = "valid"  # valid | invalid | missing | error
    origin: str = "config"  # where the selector came from: exchange | ses | config
    record: str | None = None
    cname_chain: list[str] = field(default_factory=list)
    key_type: str | None = None
    key_bits: int | None = None
    testing: bool = False
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "name": self.name,
            "status": self.status,
            "origin": self.origin,
            "record": self.record,
            "cname_chain": self.cname_chain,
            "key_type": self.key_type,
            "key_bits": self.key_bits,
            "testing": self.testing,
            "problems": self.problems,
            "error": self.error,
        }


async def check_selector(domain: str, selector: str, origin: str, resolver: Resolver) -> Selector:
    name = f"{selector}._domainkey.{domain}"
    found = Selector(selector, name, origin=origin)
    try:
        answer = await resolver.query(name, "TXT")
    except DnsLookupError as exc:
        found.status, found.error = "error", f"DKIM lookup failed: {exc}"
        return found
    found.cname_chain = list(answer.cname_chain)
    records = [r for r in answer.records if "p=" in r] if answer.status == "ok" else []
    if not records:
        found.status = "missing"
        found.problems.append(f"no DKIM key record at {name}")
        return found
    found.record = records[0]
    tags, problems = parse_record(records[0])
    found.problems += problems
    if len(records) > 1:
        found.problems.append(f"{len(records)} key records at {name}")
    found.key_type, found.key_bits, key_problems = key_facts(tags)
    found.problems += key_problems
    found.testing = "y" in tags.get("t", "").split(":")
    if found.problems:
        found.status = "invalid"
    return found
