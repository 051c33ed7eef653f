"""DNS lookups for the email-posture checks: dnspython's async resolver with configurable
nameservers (ports included), a timeout and retries per query, bounded concurrency, and one
cache per run (concurrent askers of the same question share one query).

A timeout or SERVFAIL is an error the caller must report as such: it is never "no record"."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

import dns._asyncbackend
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import httpx

from connectors.dns.capped_http import capped_client

Status = Literal["ok", "nxdomain", "nodata"]
# A DNS message's length is a 16-bit number (RFC 1035 section 4.2.2).
MAX_DNS_MESSAGE = 65_535
DNS_MESSAGE = "application/dns-message"


class DnsLookupError(Exception):
    """The question could not be answered (timeout, SERVFAIL, refused): not the same as an
    empty answer. `reason` says which, for the evidence."""

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"{rdtype} {name}: {reason}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    name: str
    rdtype: str
    status: Status
    records: tuple[str, ...] = ()
    # For TXT: each record's character-strings joined, as raw bytes (SPF must notice non-ASCII).
    raw: tuple[bytes, ...] = ()
    # The DNSSEC "authenticated data" flag from a validating resolver.
    authenticated: bool = False
    # The names CNAMEs led to, in order (a DKIM selector pointing into a provider's zone).
    cname_chain: tuple[str, ...] = ()
    # The answer and its signatures as dnspython holds them, for DNSSEC validation.
    rrset: dns.rrset.RRset | None = field(default=None, compare=False, repr=False)
    rrsigs: dns.rrset.RRset | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.rdtype,
            "status": self.status,
            "records": list(self.records),
            "authenticated": self.authenticated,
            "cnames": list(self.cname_chain),
        }

    @property
    def void(self) -> bool:
        return self.status != "ok" or not self.records


def parse_nameserver(value: str, ca_bundle: str | None = None) -> dns.nameserver.Nameserver:
    """Plain DNS: `192.0.2.53`, `192.0.2.53:5353`, `[2001:db8::53]:5353`, `2001:db8::53`.
    DNS over TLS: `tls://192.0.2.53`, `tls://192.0.2.53:853#dns.example` (the name the
    certificate must carry). DNS over HTTPS: `https://dns.example/dns-query`. Encrypted
    transports verify the server's certificate against `ca_bundle`, or the system's CAs."""
    verify: bool | str = ca_bundle or True
    if value.startswith("https://"):
        return CappedDoH(value, verify=verify)
    if value.startswith("tls://"):
        address, _, hostname = value.removeprefix("tls://").partition("#")
        host, port = _host_port(address, 853)
        return dns.nameserver.DoTNameserver(host, port, hostname or None, verify=verify)
    host, port = _host_port(value, 53)
    return dns.nameserver.Do53Nameserver(host, port)


class DohFailure(OSError):
    """A DNS over HTTPS server's answer that is no DNS answer: an HTTP error, an answer over
    the largest DNS message, a compressed one. An OSError, so that dnspython takes the server
    out of the query's rotation at once and reports why, instead of asking it again until the
    lifetime is spent."""


class CappedDoH(dns.nameserver.DoHNameserver):
    """DNS over HTTPS (RFC 8484, POST) through httpx, reading no more than the largest DNS
    message (65,535 bytes) and no compressed answer: dnspython's own DoH client reads an HTTP
    answer whole, and needs an extra (`httpx2`) that commsaudit does not install. dnspython
    still writes the query and parses the answer. Asynchronous only, as the resolver is."""

    def __init__(self, url: str, verify: bool | str = True) -> None:
        super().__init__(url, verify=verify)
        self._verify = verify
        # One client (its TLS context, its kept-alive connections) for every query of a run:
        # a handshake a query would cost a round trip or two each, and the certificate store
        # loaded again each time. An httpx client belongs to the event loop that made it.
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_here(self, timeout: float) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            # HTTP/2, "the minimum RECOMMENDED version of HTTP for use with DoH" (RFC 8484
            # section 5.2): a run's concurrent questions share one connection.
            self._client = capped_client(MAX_DNS_MESSAGE, _trust(self._verify), timeout, http2=True)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    def query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool = False,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        raise NotImplementedError("commsaudit asks DNS over HTTPS asynchronously only")

    async def async_query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        backend: dns._asyncbackend.Backend,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        headers = {"Content-Type": DNS_MESSAGE, "Accept": DNS_MESSAGE}
        client = self._client_here(timeout)
        try:
            response = await client.post(
                self.url, content=request.to_wire(), headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            raise dns.exception.Timeout(timeout=timeout) from None  # type: ignore[no-untyped-call]
        except httpx.HTTPError as exc:
            raise DohFailure(f"{self.url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise DohFailure(f"{self.url} answered HTTP {response.status_code}")
        answer = dns.message.from_wire(
            response.content,
            keyring=request.keyring,
            request_mac=request.request_mac,
            one_rr_per_rrset=one_rr_per_rrset,
            ignore_trailing=ignore_trailing,
        )
        if not request.is_response(answer):
            raise dns.query.BadResponse
        return answer


def _trust(verify: bool | str) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def _host_port(value: str, default: int) -> tuple[str, int]:
    """(IP address, port); a name is refused, since finding its address would need DNS."""
    host, port = value, default
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest.lstrip(":") or default)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return host, port


@dataclass
class Stats:
    queries: int = 0
    cached: int = 0
    failures: int = 0


@dataclass
class Resolver:
    nameservers: list[str] = field(default_factory=list)
    timeout: float = 3.0
    retries: int = 2
    concurrency: int = 64
    ca_bundle: str | None = None  # for DNS over TLS or HTTPS servers with a private CA
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        if self.nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                parse_nameserver(n, self.ca_bundle) for n in self.nameservers
            ]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        # Ask for DNSSEC records so a validating resolver can set the AD flag.
        self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.timeout = self.timeout
        self._resolver.lifetime = self.timeout * (self.retries + 1)
        self._cache: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._slots = asyncio.Semaphore(self.concurrency)
        # Every answer and failure, as evidence.
        self.log: list[dict[str, Any]] = []

    async def aclose(self) -> None:
        """Close what the run's queries kept open (DNS over HTTPS connections)."""
        for nameserver in self._resolver.nameservers:
            if isinstance(nameserver, CappedDoH):
                await nameserver.aclose()

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        future = self._cache.get(key)
        if future is not None:
            self.stats.cached += 1
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._cache[key] = future
        try:
            answer = await self._ask(key[0], key[1])
        except BaseException as exc:
            if isinstance(exc, DnsLookupError):
                self.log.append(
                    {"name": key[0], "type": key[1], "status": "error", "error": exc.reason}
                )
            future.set_exception(exc)
            future.exception()  # retrieved here: a failure is reported by whoever asked first
            raise
        self.log.append(answer.to_json())
        future.set_result(answer)
        return answer

    async def addresses(self, host: str) -> list[str]:
        """The host's IPv4 and IPv6 addresses (both asked at once). Both questions are seen to
        their end before a failure of either is raised: one left running would end after the
        run has (a CNAME loop fails each at its own pace), with nobody to hear how."""
        answers = await asyncio.gather(
            self.query(host, "A"), self.query(host, "AAAA"), return_exceptions=True
        )
        records: list[str] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            records.extend(answer.records)
        return records

    async def _ask(self, name: str, rdtype: str) -> Answer:
        async with self._slots:
            self.stats.queries += 1
            try:
                result = await self._resolver.resolve(
                    name, rdtype, raise_on_no_answer=False, search=False
                )
            except dns.resolver.NXDOMAIN:
                return Answer(name, rdtype, "nxdomain")
            except dns.resolver.NoNameservers as exc:
                self.stats.failures += 1
                raise DnsLookupError(name, rdtype, _no_nameservers(exc)) from None
            except dns.exception.Timeout:
                self.stats.failures += 1
                raise DnsLookupError(
                    name, rdtype, f"no answer within {self._resolver.lifetime:.0f} s (timeout)"
                ) from None
            except dns.exception.DNSException as exc:
                self.stats.failures += 1
                raise DnsLookupError(name, rdtype, f"{type(exc).__name__}: {exc}") from None
        authenticated = bool(result.response.flags & dns.flags.AD)
        chain = tuple(
            rdata.target.to_text().rstrip(".").lower()
            for rrset in result.response.answer
            if rrset.rdtype == dns.rdatatype.CNAME
            for rdata in rrset
        )
        if result.rrset is None:
            return Answer(name, rdtype, "nodata", authenticated=authenticated, cname_chain=chain)
        signatures = _signatures(result.response, result.rrset)
        raw: tuple[bytes, ...] = ()
        if rdtype == "TXT":
            raw = tuple(b"".join(rdata.strings) for rdata in result.rrset)
            records = tuple(r.decode("utf-8", errors="replace") for r in raw)
        else:
            records = tuple(rdata.to_text() for rdata in result.rrset)
        return Answer(
            name, rdtype, "ok", records, raw, authenticated, chain, result.rrset, signatures
        )


def _signatures(response: dns.message.Message, rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
    try:
        return response.find_rrset(
            response.answer, rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype
        )
    except KeyError:
        return None


def _no_nameservers(exc: dns.resolver.NoNameservers) -> str:
    for error in exc.kwargs.get("errors") or []:
        # (server, over TCP, port, what went wrong, the response), as dnspython records them
        if isinstance(error[3], dns.message.ChainTooLong):
            return _chain_too_long(error[4])
    text = str(exc)
    if "SERVFAIL" in text:
        return "the nameserver answered SERVFAIL"
    if "REFUSED" in text:
        return "the nameserver refused the query"
    return f"no nameserver could answer ({text})"


# Names of a CNAME chain the reason spells out.
_CHAIN_SHOWN = 6


def _chain_too_long(response: object) -> str:
    """The reason for an answer whose CNAMEs dnspython gave up following: a loop, named by
    its links, or a chain past dnspython's limit."""
    if not isinstance(response, dns.message.Message) or len(response.question) != 1:
        return f"the CNAME chain loops or is longer than {dns.message.MAX_CHAIN} names"
    targets = {
        rrset.name: rdata.target
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.CNAME
        for rdata in rrset
    }
    name = response.question[0].name
    chain = [name]
    while name in targets and len(chain) <= dns.message.MAX_CHAIN:
        name = targets[name]
        if name in chain:
            loop = [*chain[chain.index(name) :], name]
            shown = [n.to_text().rstrip(".") for n in loop[:_CHAIN_SHOWN]]
            more = " -> ..." if len(loop) > _CHAIN_SHOWN else ""
            return f"CNAME loop: {' -> '.join(shown)}{more}"
        chain.append(name)
    return f"the CNAME chain is longer than {dns.message.MAX_CHAIN} names"
