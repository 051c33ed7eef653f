"""The email-posture connector: every mail domain's SPF, DMARC, DKIM, MTA-STS, TLS-RPT,
MX STARTTLS, DNSSEC/DANE, and the third-party senders its records reveal.

Domains come from `[dns] domains`, from the Microsoft 365 verified domains that carry email, and
from SES domain identities. DKIM selectors come from config, from Exchange Online's DKIM
configuration and from SES's Easy DKIM tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any, ClassVar

from auditor.model.errors import InputError
from auditor.model.section import Platform, Section, SubjectKind
from connectors.base import CollectContext, Connector, Permission, RawRecord
from connectors.dns import dane, dkim, dmarc, mta_sts, spf, starttls, tlsrpt
from connectors.dns.dnssec import ROOT_ANCHORS, TrustAnchorError, Validator, parse_anchors
from connectors.dns.resolver import DnsLookupError, Resolver, parse_nameserver

_SENDERS = Path(__file__).with_name("senders.json")


def load_senders(extra: Path | None = None) -> list[dict[str, Any]]:
    vendors: list[dict[str, Any]] = json.loads(_SENDERS.read_text(encoding="utf-8"))["vendors"]
    if extra is not None:
        mine = json.loads(extra.read_text(encoding="utf-8"))
        overrides = {v["vendor"]: v for v in mine.get("vendors", [])}
        vendors = [overrides.pop(v["vendor"], v) for v in vendors] + list(overrides.values())
    return vendors


def match_vendor(target: str, vendors: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    target = target.lower().rstrip(".")
    for vendor in vendors:
        for domain in vendor.get(kind, []):
            if target == domain or target.endswith("." + domain):
                return vendor
    return None


# The most an SMTP probe of one MX host may take (every address, every read), and the share of
# the run's remaining time it may use: the DNSSEC/DANE lookups after it must still fit.
_SMTP_TIMEOUT = 15.0
_SMTP_SHARE = 0.8
# Hosts that could not be probed that an error's reason spells out.
_REASON_HOSTS = 3
# The most MX hosts a domain may name: each is looked up and probed (up to eight addresses
# each), and a zone is not to turn the audit into a scan of hosts it lists. Real domains name
# a handful; beyond this the MX-based sections are `error`, never judged on a part.
MAX_MX_HOSTS = 32


class _TooManyMx(Exception):
    pass


def _smtp_budget(remaining: float) -> float:
    return max(0.1, min(_SMTP_TIMEOUT, remaining * _SMTP_SHARE))


async def _probe(
    host: str, addresses: list[str], *, port: int, ca: str | None, timeout: float
) -> starttls.Probe:
    """One MX host's probe; a bug met on one host's answer is `error` for that host, not the
    end of the connector."""
    try:
        return await starttls.probe(host, addresses, port=port, ca_bundle=ca, timeout=timeout)
    except Exception as exc:
        failed = starttls.Probe(host.rstrip("."), port=port, status="error")
        failed.error = f"{failed.host}: the probe failed unexpectedly ({type(exc).__name__})"
        return failed


def _unprobed(probes: list[starttls.Probe]) -> str | None:
    """Why the section is `error`, when any MX host could not be probed: an unanswered probe
    is no evidence of missing STARTTLS, so no verdict may rest on it."""
    failed = [p for p in probes if p.status in ("unreachable", "error")]
    if not failed:
        return None
    shown = "; ".join(p.error or f"{p.host}: no answer" for p in failed[:_REASON_HOSTS])
    more = len(failed) - _REASON_HOSTS
    return f"could not probe {len(failed)} MX host(s): {shown}" + (
        f"; and {more} more" if more > 0 else ""
    )


class DnsConnector(Connector):
    name: ClassVar[str] = "dns"
    title: ClassVar[str] = "Email posture (DNS)"
    platforms: ClassVar[tuple[Platform, ...]] = ("dns",)
    depends_on: ClassVar[tuple[str, ...]] = ("m365", "aws")
    # The domains to check and their DKIM selectors (see _domains and _selectors).
    consumes: ClassVar[tuple[str, ...]] = (
        "m365.entra.domains",
        "m365.exo.dkim_domains",
        "aws.ses.identities",
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "domains": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "nameservers": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "Resolvers to ask, with optional ports (127.0.0.1:5353).",
            },
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 512},
            "smtp_probe": {"type": "boolean"},
            "smtp_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "https_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "ca_bundle": {
                "type": "string",
                "minLength": 1,
                "description": "Extra CA to trust for MTA-STS hosts, MX certificates and DNS "
                "over TLS or HTTPS servers.",
            },
            "dkim_selectors": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1},
                        },
                    },
                ]
            },
            "senders_file": {"type": "string", "minLength": 1},
            "trust_anchors": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
                "description": "DS records to start DNSSEC validation from (default: the root's).",
            },
            "dnssec_validation": {
                "enum": ["local", "resolver"],
                "description": "Validate signatures here (local, the default), or trust the "
                "resolver's AD flag (resolver).",
            },
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.stats: dict[str, Any] = {}

    def _path(self, key: str) -> Path | None:
        value = self.config.get(key)
        return (self.base_dir / value).resolve() if value else None

    def preflight(self, now: dt.datetime) -> None:
        for key in ("ca_bundle", "senders_file"):
            path = self._path(key)
            if path is not None and not path.is_file():
                raise InputError(f"[dns] {key}: {path} does not exist")
        for server in self.config.get("nameservers", []):
            try:
                parse_nameserver(server)
            except (ValueError, TypeError) as exc:
                raise InputError(
                    f"[dns] nameservers: {server!r} is not a nameserver ({exc}); write an "
                    "address with an optional port, tls://address[:port][#name], or an https:// URL"
                ) from exc
        try:
            parse_anchors(self.config.get("trust_anchors", ROOT_ANCHORS))
        except TrustAnchorError as exc:
            raise InputError(f"[dns] trust_anchors: {exc}") from exc
        if self._path("senders_file"):
            try:
                load_senders(self._path("senders_file"))
            except (ValueError, KeyError) as exc:
                raise InputError(f"[dns] senders_file is not a senders file: {exc}") from exc

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        return [("dns", "domain", d.lower().rstrip(".")) for d in self.config.get("domains", [])]

    def scope(self) -> dict[str, Any]:
        return {
            "domains": [d.lower() for d in self.config.get("domains", [])],
            "nameservers": self.config.get("nameservers", ["(system resolvers)"]),
            "smtp_probe": self.config.get("smtp_probe", True),
            "collection": self.stats,
        }

    @classmethod
    def permissions(cls) -> list[Permission]:
        return [
            Permission(
                "DNS queries (UDP/TCP 53) to the configured resolvers",
                "public records only: no credentials",
            ),
            Permission("HTTPS to mta-sts.<domain> (443)", "the published MTA-STS policy"),
            Permission("SMTP to each MX host (25)", "EHLO and STARTTLS only; no mail is sent"),
        ]

    def _domains(self, upstream: list[Section]) -> list[str]:
        found = [d.lower().rstrip(".") for d in self.config.get("domains", [])]
        for section in upstream:
            if section.name == "m365.entra.domains" and section.status == "ok":
                for domain in section.data or []:
                    name = str(domain.get("id", "")).lower()
                    if (
                        domain.get("isVerified")
                        and "Email" in (domain.get("supportedServices") or [])
                        and not domain.get("isInitial")
                        and not name.endswith(".onmicrosoft.com")
                    ):
                        found.append(name)
            elif section.name == "aws.ses.identities" and section.status == "ok":
                for identity in (section.data or {}).get("identities", []):
                    if identity.get("type") == "DOMAIN" and identity.get("identity"):
                        found.append(str(identity["identity"]).lower().rstrip("."))
        return list(dict.fromkeys(found))

    def _selectors(self, domain: str, upstream: list[Section]) -> list[tuple[str, str]]:
        """(selector, where it came from) for a domain."""
        chosen: list[tuple[str, str]] = []
        configured = self.config.get("dkim_selectors", [])
        names = configured if isinstance(configured, list) else configured.get(domain, [])
        chosen += [(s, "config") for s in names]
        for section in upstream:
            if section.name == "m365.exo.dkim_domains" and section.status == "ok":
                for entry in section.data or []:
                    if str(entry.get("domain", "")).lower() == domain and entry.get("Enabled"):
                        for key in ("Selector1CNAME", "Selector2CNAME"):
                            cname = entry.get(key) or ""
                            selector = cname.split("-", 1)[0] if cname else ""
                            if selector:
                                chosen.append((selector, "exchange"))
            elif section.name == "aws.ses.identities" and section.status == "ok":
                # Easy DKIM: each token is a selector, <token>._domainkey.<domain>.
                for identity in (section.data or {}).get("identities", []):
                    dkim_settings = identity.get("dkim") or {}
                    if str(identity.get("identity", "")).lower() == domain and dkim_settings.get(
                        "signing_enabled"
                    ):
                        chosen += [(token, "ses") for token in dkim_settings.get("tokens", [])]
        return list(dict.fromkeys(chosen))

    async def collect(self, ctx: CollectContext) -> None:
        resolver = Resolver(
            list(self.config.get("nameservers", [])),
            timeout=float(self.config.get("timeout_seconds", 3.0)),
            retries=int(self.config.get("retries", 2)),
            concurrency=int(self.config.get("concurrency", 64)),
            ca_bundle=str(self._path("ca_bundle")) if self._path("ca_bundle") else None,
        )
        validator = Validator(
            resolver, self.config.get("trust_anchors", ROOT_ANCHORS), now=ctx.now.timestamp()
        )
        vendors = load_senders(self._path("senders_file"))
        domains = self._domains(ctx.upstream)
        for domain in domains:
            ctx.add_subject("dns", "domain", domain)
        ctx.progress(f"{len(domains)} domain(s)")
        try:
            await asyncio.gather(
                *(self._domain(ctx, resolver, validator, d, vendors) for d in domains)
            )
        finally:
            await resolver.aclose()
        ctx.add_raw(
            RawRecord(
                path="dns/answers.json",
                source="dns:answers",
                collected_at=ctx.now,
                body=json.dumps(resolver.log, indent=1).encode(),
                request={"nameservers": self.config.get("nameservers", [])},
            )
        )
        self.stats = {
            "queries": resolver.stats.queries,
            "cached": resolver.stats.cached,
            "failures": resolver.stats.failures,
            "domains": len(domains),
        }

    async def _domain(
        self,
        ctx: CollectContext,
        resolver: Resolver,
        validator: Validator,
        domain: str,
        vendors: list[dict[str, Any]],
    ) -> None:
        answers = ("raw/dns/answers.json",)

        def add(
            name: str,
            data: Any,
            source: str,
            *,
            raw: tuple[str, ...] = answers,
            status: str = "ok",
            reason: str | None = None,
        ) -> None:
            ctx.add_section(
                name,
                platform="dns",
                subject=domain,
                data=data,
                source=source,
                raw=raw,
                status=status,  # type: ignore[arg-type]
                reason=reason,
            )

        spf_result, dmarc_result, tls_result = await asyncio.gather(
            spf.analyse(domain, resolver),
            dmarc.analyse(domain, resolver),
            tlsrpt.analyse(domain, resolver),
        )
        for name, result in (
            ("dns.spf", spf_result),
            ("dns.dmarc", dmarc_result),
            ("dns.tls_rpt", tls_result),
        ):
            error = result.error if result.status == "error" else None
            add(
                name,
                None if error else result.to_json(),
                f"dns:{name.split('.')[1]} {domain}",
                status="error" if error else "ok",
                reason=error,
            )

        try:
            mx = await self._mx(resolver, domain)
        except (DnsLookupError, _TooManyMx) as exc:
            reason = str(exc) if isinstance(exc, _TooManyMx) else f"MX lookup failed: {exc}"
            for name in ("dns.mx", "dns.mta_sts", "dns.starttls", "dns.dnssec"):
                add(name, None, f"dns:MX {domain}", status="error", reason=reason)
            mx = None
        if mx is not None:
            add("dns.mx", mx, f"dns:MX {domain}")
            await self._transport(ctx, resolver, validator, domain, mx, add)

        selectors = self._selectors(domain, ctx.upstream)
        checked = await asyncio.gather(
            *(dkim.check_selector(domain, s, origin, resolver) for s, origin in selectors)
        )
        dkim_errors = [c.error for c in checked if c.status == "error"]
        add(
            "dns.dkim",
            None
            if dkim_errors
            else {"domain": domain, "selectors": [c.to_json() for c in checked]},
            f"dns:DKIM {domain}",
            status="error" if dkim_errors else "ok",
            reason=dkim_errors[0] if dkim_errors else None,
        )

        senders = self._senders(spf_result, checked, vendors)
        add(
            "dns.senders",
            {"domain": domain, "senders": senders},
            f"dns:SPF and DKIM targets {domain}",
        )
        found: dict[str, dict[str, Any]] = {}
        for sender in senders:
            entry = found.setdefault(
                sender["vendor"],
                {"vendor": sender["vendor"], "name": sender["name"], "services": []},
            )
            if sender["service"] not in entry["services"]:
                entry["services"].append(sender["service"])
        status = "error" if spf_result.status == "error" else "ok"
        add(
            "dns.vendors",
            list(found.values()) if status == "ok" else None,
            f"dns:senders {domain}",
            status=status,
            reason=spf_result.error if status == "error" else None,
        )

    async def _mx(self, resolver: Resolver, domain: str) -> dict[str, Any]:
        answer = await resolver.query(domain, "MX")
        found = []
        for record in answer.records:
            preference, _, host = record.partition(" ")
            host = host.rstrip(".").lower()
            if host:  # an empty host is a null MX (RFC 7505): the domain receives no mail
                found.append((int(preference), host))
        if len(found) > MAX_MX_HOSTS:
            raise _TooManyMx(
                f"{domain} names {len(found)} MX hosts, more than the {MAX_MX_HOSTS} commsaudit "
                "looks up and probes: the mail transport of the others cannot be judged"
            )
        addresses = await asyncio.gather(*(resolver.addresses(host) for _, host in found))
        hosts = [
            {"host": host, "preference": preference, "addresses": address_list}
            for (preference, host), address_list in zip(found, addresses, strict=True)
        ]
        hosts.sort(key=lambda h: (h["preference"], h["host"]))
        return {"domain": domain, "hosts": hosts, "resolver_ad_flag": answer.authenticated}

    async def _transport(
        self,
        ctx: CollectContext,
        resolver: Resolver,
        validator: Validator,
        domain: str,
        mx: dict[str, Any],
        add: Any,
    ) -> None:
        ca = str(self._path("ca_bundle")) if self._path("ca_bundle") else None
        fetch = mta_sts.Fetch(port=int(self.config.get("https_port", 443)), ca_bundle=ca)
        hosts = [h["host"] for h in mx["hosts"]]
        sts = await mta_sts.analyse(domain, resolver, hosts, fetch)
        sts_error = sts.error if sts.status == "error" else None
        add(
            "dns.mta_sts",
            None if sts_error else sts.to_json(),
            f"https:{sts.policy_url}",
            status="error" if sts_error else "ok",
            reason=sts_error,
        )

        if not self.config.get("smtp_probe", True):
            reason = "the SMTP probe is turned off ([dns] smtp_probe = false or --no-smtp-probe)"
            add("dns.starttls", None, f"smtp:{domain}", status="not_applicable", reason=reason)
            probes: list[starttls.Probe] = []
        else:
            port = int(self.config.get("smtp_port", 25))
            timeout = _smtp_budget(ctx.remaining())
            probes = list(
                await asyncio.gather(
                    *(
                        _probe(h["host"], h["addresses"], port=port, ca=ca, timeout=timeout)
                        for h in mx["hosts"]
                    )
                )
            )
            raw_path = ctx.add_raw(
                RawRecord(
                    path=f"dns/{domain}/smtp.json",
                    source=f"smtp:{domain}",
                    collected_at=ctx.now,
                    body=json.dumps([p.to_json() for p in probes], indent=1).encode(),
                    request={"port": port, "hosts": hosts},
                )
            )
            unprobed = _unprobed(probes)
            add(
                "dns.starttls",
                None if unprobed else {"domain": domain, "hosts": [p.to_json() for p in probes]},
                f"smtp:{domain}",
                raw=("raw/dns/answers.json", raw_path),
                status="error" if unprobed else "ok",
                reason=unprobed,
            )

        certificates = (
            [p.certificate.der if p.certificate else None for p in probes]
            if probes
            else [None] * len(hosts)
        )
        try:
            mode = self.config.get("dnssec_validation", "local")
            result = await dane.analyse(domain, hosts, certificates, resolver, validator, mode)
        except DnsLookupError as exc:
            reason = f"DNSSEC lookup failed: {exc}"
            add("dns.dnssec", None, f"dns:DNSSEC {domain}", status="error", reason=reason)
        else:
            add("dns.dnssec", result, f"dns:DNSSEC {domain}")

    @staticmethod
    def _senders(
        spf_result: spf.Analysis, selectors: list[dkim.Selector], vendors: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        # (where the vendor's domain was found, which map of the senders file to look in, why)
        targets = [(t, "spf", f"SPF include of {t}") for t in spf_result.targets] + [
            (t, "dkim", f"DKIM selector {s.selector} points to {t}")
            for s in selectors
            for t in s.cname_chain
        ]
        found: list[dict[str, Any]] = []
        for target, kind, found_via in targets:
            vendor = match_vendor(target, vendors, kind)
            if vendor:
                found.append(
                    {
                        "vendor": vendor["vendor"],
                        "name": vendor["name"],
                        "service": vendor["service"],
                        "baa_offered": vendor.get("baa_offered"),
                        "found_via": found_via,
                    }
                )
        unique = {(f["vendor"], f["found_via"]): f for f in found}
        return list(unique.values())
