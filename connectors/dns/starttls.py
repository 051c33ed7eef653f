"""Probe an MX host the way a sending server would: connect on port 25, EHLO, STARTTLS, and
look at what TLS it negotiates and which certificate it presents (chain validity, the name,
days to expiry). Read-only: it says EHLO and QUIT, nothing else; no mail is sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

HELO_NAME = "commsaudit.invalid"
_MODERN = ("TLSv1.2", "TLSv1.3")


@dataclass
class Certificate:
    subject: str
    issuer: str
    names: list[str]
    not_after: str
    days_left: int
    der: bytes = field(repr=False, default=b"")

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": self.names,
            "not_after": self.not_after,
            "days_left": self.days_left,
        }


@dataclass
class Probe:
    host: str
    address: str | None = None
    port: int = 25
    # ok | no-starttls | tls-failed: what the server showed. unreachable (no address took the
    # connection) | error (one did but gave no usable answer): the probe could not be made.
    status: str = "ok"
    banner: str | None = None
    starttls: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    verified: bool = False
    verify_error: str | None = None
    name_matches: bool = False
    certificate: Certificate | None = None
    error: str | None = None

    @property
    def modern_tls(self) -> bool:
        return self.tls_version in _MODERN

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "status": self.status,
            "banner": self.banner,
            "starttls": self.starttls,
            "tls_version": self.tls_version,
            "modern_tls": self.modern_tls,
            "cipher": self.cipher,
            "verified": self.verified,
            "verify_error": self.verify_error,
            "name_matches": self.name_matches,
            "certificate": self.certificate.to_json() if self.certificate else None,
            "error": self.error,
        }


def names_match(host: str, names: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in host:
            return True
    return False


def describe_certificate(der: bytes, now: dt.datetime) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    names: list[str]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = list(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    not_after = cert.not_valid_after_utc
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=[str(n) for n in names],
        not_after=not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        days_left=(not_after - now).days,
        der=der,
    )


class ProbeError(Exception):
    """The server answered, but not in a way that says anything about STARTTLS (garbage, an
    endless or over-long reply, a refusal to talk): the probe could not be made."""


# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Twice that is slack for
# sloppy servers and still a bound: the stream reader buffers no more than a couple of lines.
MAX_LINE = 1024
# An EHLO reply lists a dozen or so extensions; a reply far longer than that is no mail server
# talking, and reading on would let the server choose how much memory the probe takes.
MAX_LINES = 100
MAX_REPLY_BYTES = 16 * 1024
# A sending server tries a few of a host's addresses, not every one a hostile zone lists.
MAX_ADDRESSES = 8
# After the TLS facts are in, the goodbye gets this long at most.
_GOODBYE_SECONDS = 2.0
# RFC 5321 4.2: a three-digit code (2xx to 5xx), then a space or a hyphen and printable text.
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])([\t\x20-\x7e]*))?\r?\n")


def _shown(raw: bytes) -> str:
    """A few bytes of what a server sent, escaped: enough to recognise, nothing to act on."""
    return repr(raw[:32]) + ("…" if len(raw) > 32 else "")


class _Smtp:
    """One SMTP conversation, reading replies within fixed bounds and saying what it was
    waiting for (the error of a probe that timed out names it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.waiting_for = "the banner"  # for the error of a probe that runs out of time

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        size = 0
        while True:
            raw = await self._line()
            size += len(raw)
            if len(lines) >= MAX_LINES or size > MAX_REPLY_BYTES:
                raise ProbeError(
                    f"{self.waiting_for} ran to more than {MAX_LINES} lines or "
                    f"{MAX_REPLY_BYTES} bytes; stopped reading"
                )
            match = _REPLY_LINE.fullmatch(raw)
            if match is None:
                raise ProbeError(f"{self.waiting_for} is not an SMTP reply: {_shown(raw)}")
            code, separator, text = match.groups()
            lines.append((text or b"").decode("ascii"))
            if separator != b"-":
                return int(code), lines

    async def _line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ProbeError(
                f"a line of {self.waiting_for} is longer than {MAX_LINE} bytes "
                "(RFC 5321 allows 512); stopped reading"
            ) from None
        except asyncio.IncompleteReadError as exc:
            raise ProbeError(
                f"the server closed the connection while we waited for {self.waiting_for}"
                + (f" (after {_shown(exc.partial)})" if exc.partial else "")
            ) from None

    async def command(self, verb: str, text: str) -> tuple[int, list[str]]:
        self.waiting_for = f"the reply to {verb}"
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()


@dataclass
class _Session:
    """How far one conversation got: what it waited for last, and TLS once it was up."""

    smtp: _Smtp | None = None
    tls: ssl.SSLObject | None = None

    @property
    def waiting_for(self) -> str:
        return self.smtp.waiting_for if self.smtp else "the connection"


async def _session(
    host: str, address: str, port: int, context: ssl.SSLContext, probe: Probe, state: _Session
) -> ssl.SSLObject | None:
    """EHLO, STARTTLS, the handshake. The caller bounds the whole conversation in time; here
    every reply is bounded in size."""
    reader, writer = await asyncio.open_connection(address, port, limit=MAX_LINE)
    smtp = state.smtp = _Smtp(reader, writer)
    try:
        code, banner = await smtp.reply()
        probe.banner = banner[0] if banner else None
        if code != 220:
            raise ProbeError(f"the server greeted with {code}, not 220: {' '.join(banner)[:80]}")
        code, capabilities = await smtp.command("EHLO", f"EHLO {HELO_NAME}")
        if 400 <= code < 500:
            # A 4xx says "not now", not "no STARTTLS here" (a 5xx says the server has no ESMTP).
            text = " ".join(capabilities)[:80]
            raise ProbeError(f"EHLO got a temporary failure ({code}): {text}")
        probe.starttls = any(c.upper().split()[0:1] == ["STARTTLS"] for c in capabilities if c)
        if code != 250 or not probe.starttls:
            return None
        code, _ = await smtp.command("STARTTLS", "STARTTLS")
        if code != 220:
            probe.starttls = False
            return None
        smtp.waiting_for = "the TLS handshake"
        await writer.start_tls(context, server_hostname=host)
        tls = writer.get_extra_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject)
        state.tls = tls
        # The TLS facts are in; a slow or rude goodbye changes nothing.
        with contextlib.suppress(ProbeError, ConnectionError, TimeoutError, OSError):
            async with asyncio.timeout(_GOODBYE_SECONDS):
                await smtp.command("EHLO", f"EHLO {HELO_NAME}")
                await smtp.command("QUIT", "QUIT")
        return tls
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def probe(
    host: str,
    addresses: list[str],
    *,
    port: int = 25,
    ca_bundle: str | None = None,
    timeout: float = 15.0,
    now: dt.datetime | None = None,
) -> Probe:
    """Probe a host's addresses in turn until one gives an answer. `timeout` bounds the whole
    probe (every address, every read, both handshakes), not each read: a server that drips a
    line a second is stopped as surely as one that says nothing.

    Status `unreachable` (no address took the connection) and `error` (one did, but gave no
    usable answer) mean the probe could not be made: they are no evidence about STARTTLS."""
    moment = now or dt.datetime.now(dt.UTC)
    result = Probe(host.rstrip("."), port=port)
    if not addresses:
        result.status, result.error = "unreachable", f"{result.host} has no address"
        return result
    deadline = asyncio.get_running_loop().time() + timeout
    strict = (
        ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    )
    problems: list[tuple[str, str]] = []  # (status, what happened) per address tried
    for address in addresses[:MAX_ADDRESSES]:
        result.address = address
        outcome = await _attempt(result, address, port, strict, deadline, timeout)
        if isinstance(outcome, ssl.SSLObject):
            _record_tls(result, outcome, moment)
            return result
        status, why = outcome
        if status in ("no-starttls", "tls-failed"):
            result.status, result.error = status, why
            return result
        problems.append((status, f"{result.host} ({address}): {why}"))
        if asyncio.get_running_loop().time() >= deadline:
            break
    # A server that answered, however badly, tells more than one that would not.
    result.status = "error" if any(s == "error" for s, _ in problems) else "unreachable"
    result.error = "; ".join(text for _s, text in problems[:3]) + (
        f"; and {len(problems) - 3} more address(es)" if len(problems) > 3 else ""
    )
    return result


async def _attempt(
    result: Probe,
    address: str,
    port: int,
    strict: ssl.SSLContext,
    deadline: float,
    timeout: float,
) -> ssl.SSLObject | tuple[str, str | None]:
    """One address: the TLS object when TLS came up, else (status, why)."""
    state = _Session()
    try:
        async with asyncio.timeout_at(deadline):
            try:
                tls = await _session(result.host, address, port, strict, result, state)
                result.verified = tls is not None
            except ssl.SSLCertVerificationError as exc:
                result.verify_error = exc.verify_message or str(exc)
                # Look again without verifying, to report what the server presents.
                state = _Session()
                tls = await _session(result.host, address, port, _lax(), result, state)
    except (TimeoutError, ProbeError, OSError) as exc:
        if state.tls is not None:
            return state.tls  # the goodbye ran out of time; the TLS facts stand
        why = _why(exc, state, timeout - max(0.0, deadline - asyncio.get_running_loop().time()))
        if result.verify_error is not None:
            # The certificate already failed to verify: that much is known, whatever came next.
            return "tls-failed", f"{result.verify_error}; looking again: {why}"
        if isinstance(exc, ssl.SSLError):
            return "tls-failed", why
        return ("unreachable" if state.smtp is None else "error"), why
    return tls if tls is not None else ("no-starttls", None)


def _why(exc: BaseException, state: _Session, waited: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out waiting for {state.waiting_for} after {waited:.0f} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ProbeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _lax() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _record_tls(result: Probe, tls: ssl.SSLObject, moment: dt.datetime) -> None:
    """The negotiated TLS and the certificate presented."""
    result.status = "ok"
    result.tls_version = tls.version()
    cipher = tls.cipher()
    result.cipher = cipher[0] if cipher else None
    der = tls.getpeercert(binary_form=True)
    if der:
        result.certificate = describe_certificate(der, moment)
        result.name_matches = names_match(result.host, result.certificate.names)
    if not result.verified and result.verify_error is None:
        result.verify_error = "not verified"
