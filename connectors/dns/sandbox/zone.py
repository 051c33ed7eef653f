"""Zone data for the sandbox's DNS server: records from plain data, with markers for
failures (TIMEOUT, SERVFAIL) and for DNSSEC-signed zones.

A name marked `DNSSEC` is the apex of a signed zone: it gets a key, serves DNSKEY, and its DS
is published by the closest signed zone above it (the topmost signed apexes are the trust
anchors). The marker's value says how the zone goes wrong, if it does: `valid` (or none),
`expired` (every signature has expired), `wrong-ds` (the parent publishes the DS of another
key), `no-ds` (signed, but the parent publishes no DS: an island of trust), `unsigned` (a
delegation to a zone that is not signed at all)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.RRSIG
import dns.rdtypes.ANY.TXT
from cryptography.hazmat.primitives.asymmetric import ec

Record = tuple[str, str, Any]  # (owner name, type, value)

SIGNING_MODES = ("valid", "expired", "wrong-ds", "no-ds", "unsigned")
# CNAMEs followed in one answer, as BIND and dnspython bound a chain.
MAX_CNAME_CHAIN = 16
_IN = dns.rdataclass.IN


def _strings(value: Any) -> list[bytes]:
    """TXT character-strings. Text the zone data wrote with \\xNN escapes is bytes, not
    code points: keep them byte for byte (SPF must notice non-ASCII)."""
    parts = value if isinstance(value, list) else [value]
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out.append(part)
        else:
            text = str(part)
            out.append(text.encode("latin-1") if all(ord(c) < 256 for c in text) else text.encode())
    # A character-string holds 255 bytes: long records are split as real zones split them.
    split: list[bytes] = []
    for part in out:
        split.extend(part[i : i + 255] for i in range(0, max(len(part), 1), 255))
    return split or [b""]


def _absolute(value: Any) -> str:
    return dns.name.from_text(str(value)).to_text()


def rdata(rtype: str, value: Any) -> dns.rdata.Rdata:
    """Zone data to wire-ready rdata. Types: A, AAAA, CNAME, PTR, MX ([preference, host]),
    TXT and SPF (served as TXT; a string or a list of strings), TLSA ([usage, selector, type,
    hex]); DNSKEY and DS come from the signer as rdata already."""
    if isinstance(value, dns.rdata.Rdata):
        return value
    if rtype in ("TXT", "SPF"):
        return dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, _strings(value))
    if rtype == "MX":
        text = f"{int(value[0])} {_absolute(value[1])}"
    elif rtype in ("CNAME", "PTR"):
        text = _absolute(value)
    else:
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return dns.rdata.from_text(_IN, dns.rdatatype.from_text(rtype), text)


@dataclass
class SignedZone:
    apex: dns.name.Name
    mode: str
    key: ec.EllipticCurvePrivateKey
    dnskey: dns.rdata.Rdata
    published_ds: dns.rdata.Rdata


def _signed_zone(apex: str, mode: str) -> SignedZone:
    if mode not in SIGNING_MODES:
        raise ValueError(f"DNSSEC marker on {apex}: {mode!r} is not one of {SIGNING_MODES}")
    name = dns.name.from_text(apex)
    # One combined key (flags 257) per zone: the sandbox has no use for a KSK/ZSK split.
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), "ECDSAP256SHA256", flags=257)
    published = dnskey
    if mode == "wrong-ds":
        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        published = dns.dnssec.make_dnskey(other, "ECDSAP256SHA256", flags=257)
    ds = dns.dnssec.make_ds(name, published, "SHA256")
    return SignedZone(name, mode, key, dnskey, ds)


@dataclass
class Zone:
    """name -> [(type, value)], and the markers TIMEOUT (never answer), SERVFAIL (the name
    and everything below it fail) and DNSSEC (see the module's description)."""

    records: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    signed: dict[str, SignedZone] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, Iterable[Any]]) -> Zone:
        zone = cls()
        for name, entries in data.items():
            for entry in entries:
                if isinstance(entry, str):
                    zone.add(name, entry.upper(), None)
                else:
                    for rtype, value in dict(entry).items():
                        zone.add(name, str(rtype).upper(), value)
        return zone

    def add(self, name: str, rtype: str, value: Any) -> None:
        key = _key(name)
        if rtype == "DNSSEC":
            self.signed[key] = _signed_zone(key or ".", value or "valid")
            return
        self.records.setdefault(key, []).append((rtype, value))

    def trust_anchors(self) -> list[str]:
        """DS records (zone-file text) of the topmost signed zones: what a validator must be
        told to trust, as it is told the root's keys in real life."""
        return [
            f"{zone.apex.to_text()} DS {zone.published_ds.to_text()}"
            for key, zone in sorted(self.signed.items())
            if self._signed_parent(key) is None and zone.mode != "unsigned"
        ]

    def answer(self, name: str, qtype: str) -> tuple[str, list[Record]]:
        """(rcode, records) for a question, following CNAMEs within the zone.

        A CNAME loop is served as an authoritative server serves one: the links up to the name
        seen again (or MAX_CNAME_CHAIN of them), NOERROR. Loops are real-world data a resolver
        must cope with, so the sandbox keeps them rather than refusing the zone."""
        return self._answer(name, qtype, ())

    def _answer(self, name: str, qtype: str, seen: tuple[str, ...]) -> tuple[str, list[Record]]:
        key = _key(name)
        seen = (*seen, key)
        if self._broken(key):
            return "SERVFAIL", []
        if qtype in ("DNSKEY", "DS"):
            signed = self._dnssec_records(key, qtype)
            if signed is not None:
                return "NOERROR", signed
        entries = self.records.get(key)
        if entries is None:
            return ("NOERROR", []) if key in self.signed else ("NXDOMAIN", [])
        types = {t for t, _ in entries}
        if "TIMEOUT" in types and self._times_out(entries, qtype):
            return "TIMEOUT", []
        cname = [(t, v) for t, v in entries if t == "CNAME"]
        if cname and qtype != "CNAME":
            target = str(cname[0][1])
            if _key(target) in seen or len(seen) >= MAX_CNAME_CHAIN:
                return "NOERROR", [(key, "CNAME", cname[0][1])]
            rcode, rest = self._answer(target, qtype, seen)
            return ("NOERROR" if rcode == "NXDOMAIN" else rcode), [
                (key, "CNAME", cname[0][1]),
                *rest,
            ]
        if qtype == "TXT":
            txt = [(key, t, v) for t, v in entries if t == "TXT" and v != "NONE"]
            # Test suites write SPF-type records meaning "also TXT" when no TXT is present.
            spf = [(key, "TXT", v) for t, v in entries if t == "SPF"]
            return "NOERROR", txt or ([] if "TXT" in types else spf)
        return "NOERROR", [(key, t, v) for t, v in entries if t == qtype]

    def signer_for(self, owner: str, rtype: str) -> SignedZone | None:
        """The zone that signs an RRset: the closest signed apex at or above its owner, except
        for DS, which the parent signs."""
        key = _key(owner)
        if rtype == "DS":
            return self._signed_parent(key)
        return self.signed.get(key) or self._signed_parent(key)

    def rrsig(
        self, owner: dns.name.Name, rdataset: dns.rdataset.Rdataset
    ) -> dns.rdata.Rdata | None:
        signer = self.signer_for(owner.to_text(), dns.rdatatype.to_text(rdataset.rdtype))
        if signer is None or signer.mode == "unsigned":
            return None
        now = dt.datetime.now(dt.UTC)
        inception, expiration = now - dt.timedelta(days=1), now + dt.timedelta(days=30)
        if signer.mode == "expired":
            inception, expiration = now - dt.timedelta(days=60), now - dt.timedelta(days=30)
        signature: dns.rdtypes.ANY.RRSIG.RRSIG = dns.dnssec.sign(
            (owner, rdataset),
            signer.key,
            signer.apex,
            signer.dnskey,  # type: ignore[arg-type]
            inception=inception,
            expiration=expiration,
        )
        return signature

    def _dnssec_records(self, key: str, qtype: str) -> list[Record] | None:
        zone = self.signed.get(key)
        if zone is None:
            return None
        if qtype == "DNSKEY":
            return [] if zone.mode == "unsigned" else [(key, "DNSKEY", zone.dnskey)]
        parent = self._signed_parent(key)
        if zone.mode in ("no-ds", "unsigned") or parent is None or parent.mode == "unsigned":
            return []
        return [(key, "DS", zone.published_ds)]

    def _signed_parent(self, key: str) -> SignedZone | None:
        labels = key.split(".") if key else []
        for start in range(1, len(labels) + 1):
            parent = self.signed.get(".".join(labels[start:]))
            if parent is not None:
                return parent
        return None

    def _broken(self, key: str) -> bool:
        labels = key.split(".")
        for start in range(len(labels)):
            entries = self.records.get(".".join(labels[start:]), [])
            if any(t == "SERVFAIL" for t, _ in entries):
                return True
        return False

    @staticmethod
    def _times_out(entries: list[tuple[str, Any]], qtype: str) -> bool:
        """As the RFC 7208 test suite means TIMEOUT: questions for types the name has no
        records of go unanswered (TXT counts as present when SPF-type records stand in)."""
        present = {t for t, v in entries if t not in ("TIMEOUT", "SERVFAIL") and v != "NONE"}
        if qtype == "TXT" and "SPF" in present and "TXT" not in {t for t, _ in entries}:
            return False
        return qtype not in present


def _key(name: str) -> str:
    """Names as the zone keys them: lower case, no trailing dot, the root as ''."""
    return name.lower().rstrip(".")
