"""DNSSEC and DANE for a mail domain: whether its MX answer validates, and whether each MX
host publishes TLSA records (RFC 7672) that are themselves secure and match the certificate
the STARTTLS probe saw."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from connectors.dns.dnssec import Validator, Verdict
from connectors.dns.resolver import Resolver

Mode = Literal["local", "resolver"]


def tlsa_matches(record: str, der: bytes) -> bool | None:
    """Whether a TLSA record (`usage selector type data`) matches the certificate; None for
    usages that need the whole chain (PKIX-TA, DANE-TA), which the probe does not keep."""
    parts = record.split()
    if len(parts) < 4:
        return False
    usage, selector, matching = int(parts[0]), int(parts[1]), int(parts[2])
    data = "".join(parts[3:]).lower()
    if usage not in (1, 3):
        return None
    cert = x509.load_der_x509_certificate(der)
    content = (
        der
        if selector == 0
        else cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    digest = {
        0: content.hex(),
        1: hashlib.sha256(content).hexdigest(),
        2: hashlib.sha512(content).hexdigest(),
    }.get(matching)
    return digest == data


async def _verdict(
    resolver: Resolver, validator: Validator, mode: Mode, name: str, rdtype: str
) -> Verdict:
    if mode == "local":
        return await validator.validate(name, rdtype)
    answer = await resolver.query(name, rdtype)
    if answer.status != "ok":
        return Verdict("indeterminate", f"no {rdtype} records at {name} to validate")
    if answer.authenticated:
        return Verdict("secure", f"the resolver set the AD flag on {rdtype} {name}")
    return Verdict("insecure", f"the resolver did not set the AD flag on {rdtype} {name}")


async def analyse(
    domain: str,
    hosts: Sequence[str],
    certificates: Sequence[bytes | None],
    resolver: Resolver,
    validator: Validator,
    mode: Mode,
) -> dict[str, Any]:
    """`certificates`: the DER certificate each host presented (None where it was not probed
    or offered no TLS). Lookup failures raise DnsLookupError for the caller to report."""
    zone = await _verdict(resolver, validator, mode, domain, "MX")
    mx = []
    for host, der in zip(hosts, certificates, strict=True):
        name = f"_25._tcp.{host}"
        answer = await resolver.query(name, "TLSA")
        records = list(answer.records)
        secure = await _verdict(resolver, validator, mode, name, "TLSA") if records else None
        results = [tlsa_matches(r, der) for r in records] if der else []
        mx.append(
            {
                "host": host,
                "tlsa": records,
                "tlsa_dnssec": secure.status if secure else None,
                "tlsa_reason": secure.reason if secure else "no TLSA records",
                "matches": any(r is True for r in results) if results else None,
            }
        )
    return {
        "domain": domain,
        "validation": mode,
        "validated": zone.secure,
        "dnssec": zone.to_json(),
        "mx": mx,
    }
