"""DNSSEC validation done here rather than trusted from a resolver's AD flag: the chain of
trust from a trust anchor (the root's keys by default) down through each DS and DNSKEY set to
the RRset asked about, every signature checked with dnspython at the audit's time.

Verdicts: `secure` (the chain holds), `insecure` (a zone on the way is not signed, or the
answer carries no signature), `bogus` (signatures or keys are there but do not validate),
`indeterminate` (no trust anchor covers the name, or there is nothing to validate). Denial of
existence (NSEC/NSEC3) is not checked: an unproven "no DS" can only make a verdict `insecure`,
never `secure`, so the gap cannot produce a false pass."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DS
import dns.rrset

from connectors.dns.resolver import Answer, Resolver

Status = Literal["secure", "insecure", "bogus", "indeterminate"]

# The root zone's key-signing keys, KSK-2017 and KSK-2024, as IANA publishes them
# (https://data.iana.org/root-anchors/root-anchors.xml).
ROOT_ANCHORS = (
    ". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
    ". DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16",
)


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    # The zones whose keys were trusted, from the anchor down.
    chain: tuple[str, ...] = ()

    @property
    def secure(self) -> bool:
        return self.status == "secure"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "chain": list(self.chain)}


@dataclass(frozen=True)
class _Trusted:
    zone: dns.name.Name
    keys: dns.rrset.RRset
    chain: tuple[str, ...]


class TrustAnchorError(ValueError):
    pass


def parse_anchors(texts: Sequence[str]) -> dict[dns.name.Name, list[dns.rdtypes.ANY.DS.DS]]:
    """`<owner> [IN] DS <key tag> <algorithm> <digest type> <digest>` lines, by owner."""
    anchors: dict[dns.name.Name, list[dns.rdtypes.ANY.DS.DS]] = {}
    for text in texts:
        parts = text.split()
        if "IN" in parts[:3]:
            parts.remove("IN")
        if len(parts) < 6 or parts[1].upper() != "DS":
            raise TrustAnchorError(
                f"trust anchor {text!r} is not a DS record "
                "(write it as '<zone> DS <key tag> <algorithm> <digest type> <digest>')"
            )
        try:
            owner = dns.name.from_text(parts[0])
            ds = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, " ".join(parts[2:]))
        except (dns.exception.DNSException, ValueError) as exc:
            raise TrustAnchorError(f"trust anchor {text!r}: {exc}") from None
        assert isinstance(ds, dns.rdtypes.ANY.DS.DS)
        anchors.setdefault(owner, []).append(ds)
    return anchors


def _ds_matches(zone: dns.name.Name, key: dns.rdata.Rdata, ds: dns.rdtypes.ANY.DS.DS) -> bool:
    try:
        made = dns.dnssec.make_ds(zone, key, ds.digest_type)
    except (dns.exception.UnsupportedAlgorithm, dns.exception.DNSException, ValueError):
        return False
    return bool(made == ds)


def _why(rrsigs: dns.rrset.RRset, now: float | None) -> str | None:
    """The common reasons a signature fails, said plainly (dnspython only says none validated)."""
    moment = time.time() if now is None else now
    expirations = [sig.expiration for sig in rrsigs]
    inceptions = [sig.inception for sig in rrsigs]
    if expirations and max(expirations) < moment:
        return f"the signatures expired on {_date(max(expirations))}"
    if inceptions and min(inceptions) > moment:
        return f"the signatures are not valid before {_date(min(inceptions))}"
    return None


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class Validator:
    """Validates RRsets for one run: zone keys, once trusted, are reused; lookups go through
    the run's resolver (and its cache)."""

    def __init__(
        self, resolver: Resolver, anchors: Sequence[str] = ROOT_ANCHORS, now: float | None = None
    ) -> None:
        self.resolver = resolver
        self.anchors = parse_anchors(anchors)
        self.now = now
        self._keys: dict[dns.name.Name, asyncio.Future[_Trusted | Verdict]] = {}

    async def validate(self, name: str, rdtype: str) -> Verdict:
        """The verdict for the RRset at `name` (after CNAMEs). Lookup failures raise
        DnsLookupError, as every other lookup does."""
        answer = await self.resolver.query(name, rdtype)
        if answer.rrset is None:
            return Verdict("indeterminate", f"no {rdtype} records at {name} to validate")
        owner = answer.rrset.name
        anchor = self._anchor_for(owner)
        if anchor is None:
            return Verdict("indeterminate", f"no trust anchor covers {owner}")
        if answer.rrsigs is None:
            return await self._unsigned(owner, rdtype, anchor)
        signer = answer.rrsigs[0].signer
        if not owner.is_subdomain(signer) or not signer.is_subdomain(anchor):
            return Verdict("bogus", f"{rdtype} {owner} is signed by {signer}, not a zone above it")
        trusted = await self._descend(anchor, signer)
        if isinstance(trusted, Verdict):
            return trusted
        return self._check(answer, trusted)

    def _check(self, answer: Answer, trusted: _Trusted) -> Verdict:
        assert answer.rrset is not None and answer.rrsigs is not None
        what = f"{answer.rdtype} {answer.rrset.name}"
        try:
            dns.dnssec.validate(
                answer.rrset, answer.rrsigs, {trusted.zone: trusted.keys}, now=self.now
            )
        except dns.exception.ValidationFailure as exc:
            why = _why(answer.rrsigs, self.now) or str(exc)
            return Verdict("bogus", f"{what}: signature does not validate ({why})", trusted.chain)
        return Verdict("secure", f"{what} validates from {trusted.chain[0]}", trusted.chain)

    async def _unsigned(self, owner: dns.name.Name, rdtype: str, anchor: dns.name.Name) -> Verdict:
        """An answer without signatures: say how far down the chain of trust reaches."""
        trusted = await self._descend(anchor, owner, must_reach=False)
        if isinstance(trusted, Verdict):
            return trusted
        zone = trusted.zone.to_text()
        return Verdict(
            "insecure",
            f"{rdtype} {owner} carries no signature; the closest signed zone above it is {zone} "
            "(an unsigned delegation below it, or a resolver that strips signatures)",
            trusted.chain,
        )

    def _anchor_for(self, name: dns.name.Name) -> dns.name.Name | None:
        covering = [a for a in self.anchors if name.is_subdomain(a)]
        return max(covering, key=len, default=None)

    async def _descend(
        self, anchor: dns.name.Name, target: dns.name.Name, *, must_reach: bool = True
    ) -> _Trusted | Verdict:
        """Trusted keys from the anchor down to `target`'s zone: a DS signed by the zone
        above, then a DNSKEY set that the DS vouches for, label by label."""
        trusted = await self._zone_keys(anchor, self.anchors[anchor], ())
        if isinstance(trusted, Verdict):
            return trusted
        labels = target.relativize(anchor).labels if target != anchor else ()
        for depth in range(len(labels) - 1, -1, -1):
            child = dns.name.Name(labels[depth:]).concatenate(anchor)
            ds = await self.resolver.query(child.to_text(), "DS")
            if ds.rrset is None:
                if child == target and must_reach:
                    return Verdict(
                        "insecure",
                        f"{child} is signed but {trusted.zone} publishes no DS for it "
                        "(the delegation is unsigned: an island of trust)",
                        trusted.chain,
                    )
                continue
            if ds.rrsigs is None:
                return Verdict(
                    "insecure", f"the DS record of {child} carries no signature", trusted.chain
                )
            verdict = self._check(ds, trusted)
            if not verdict.secure:
                return verdict
            step = await self._zone_keys(child, list(ds.rrset), trusted.chain)
            if isinstance(step, Verdict):
                return step
            trusted = step
        return trusted

    async def _zone_keys(
        self,
        zone: dns.name.Name,
        ds_records: Sequence[dns.rdata.Rdata],
        chain: tuple[str, ...],
    ) -> _Trusted | Verdict:
        future = self._keys.get(zone)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._keys[zone] = future
            try:
                future.set_result(await self._fetch_keys(zone, ds_records, chain))
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()
                del self._keys[zone]
                raise
        return await asyncio.shield(future)

    async def _fetch_keys(
        self, zone: dns.name.Name, ds_records: Sequence[dns.rdata.Rdata], chain: tuple[str, ...]
    ) -> _Trusted | Verdict:
        here = (*chain, zone.to_text())
        answer = await self.resolver.query(zone.to_text(), "DNSKEY")
        if answer.rrset is None:
            return Verdict("bogus", f"{zone} has a DS record but serves no DNSKEY", chain)
        vouched = [
            key
            for key in answer.rrset
            if any(
                isinstance(ds, dns.rdtypes.ANY.DS.DS) and _ds_matches(zone, key, ds)
                for ds in ds_records
            )
        ]
        if not vouched:
            tags = sorted(
                {ds.key_tag for ds in ds_records if isinstance(ds, dns.rdtypes.ANY.DS.DS)}
            )
            return Verdict(
                "bogus", f"no DNSKEY of {zone} matches its DS record (key tags {tags})", chain
            )
        if answer.rrsigs is None:
            return Verdict("bogus", f"the DNSKEY set of {zone} carries no signature", chain)
        entry = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        for key in vouched:
            entry.add(key)
        try:
            dns.dnssec.validate(answer.rrset, answer.rrsigs, {zone: entry}, now=self.now)
        except dns.exception.ValidationFailure as exc:
            why = _why(answer.rrsigs, self.now) or str(exc)
            return Verdict("bogus", f"the DNSKEY set of {zone} does not validate ({why})", chain)
        return _Trusted(zone, answer.rrset, here)
