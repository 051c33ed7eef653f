"""Probe an MX host the way a sending server would: connect on port 25, EHLO, STARTTLS, and
look at what TLS it negotiates and which certificate it presents (chain validity, the name,
days to expiry). Read-only: it says EHLO and QUIT, nothing else; no mail is sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
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
    status: str = "ok"  # ok | no-starttls | tls-failed | unreachable
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


class _Smtp:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout

    async def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not raw:
                raise ConnectionError("the server closed the connection")
            line = raw.decode("latin-1").rstrip("\r\n")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    async def command(self, text: str) -> tuple[int, list[str]]:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()


async def _session(
    host: str, address: str, port: int, context: ssl.SSLContext, timeout: float, probe: Probe
) -> ssl.SSLObject | None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    smtp = _Smtp(reader, writer, timeout)
    try:
        code, banner = await smtp.reply()
        probe.banner = banner[0] if banner else None
        if code != 220:
            raise ConnectionError(f"greeting {code} {' '.join(banner)}")
        code, capabilities = await smtp.command(f"EHLO {HELO_NAME}")
        probe.starttls = any(c.upper().split()[0:1] == ["STARTTLS"] for c in capabilities if c)
        if code != 250 or not probe.starttls:
            return None
        code, _ = await smtp.command("STARTTLS")
        if code != 220:
            probe.starttls = False
            return None
        await asyncio.wait_for(writer.start_tls(context, server_hostname=host), timeout)
        tls = writer.get_extra_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject)
        try:
            await smtp.command(f"EHLO {HELO_NAME}")
            await smtp.command("QUIT")
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the TLS facts are in; a rude goodbye changes nothing
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
    moment = now or dt.datetime.now(dt.UTC)
    result = Probe(host.rstrip("."), port=port)
    if not addresses:
        result.status, result.error = "unreachable", f"{host} has no address"
        return result
    strict = (
        ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    )
    last_error = ""
    for address in addresses:
        result.address = address
        try:
            tls = await _session(result.host, address, port, strict, timeout, result)
            result.verified = tls is not None
        except ssl.SSLCertVerificationError as exc:
            result.verify_error = exc.verify_message or str(exc)
            # Look again without verifying, to report what the server presents.
            lax = ssl.create_default_context()
            lax.check_hostname = False
            lax.verify_mode = ssl.CERT_NONE
            try:
                tls = await _session(result.host, address, port, lax, timeout, result)
            except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as again:
                result.status, result.error = "tls-failed", f"{type(again).__name__}: {again}"
                return result
        except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            continue
        except ssl.SSLError as exc:
            result.status, result.error = "tls-failed", f"TLS handshake failed: {exc.reason or exc}"
            return result
        if tls is None:
            result.status = "no-starttls"
            return result
        result.tls_version = tls.version()
        cipher = tls.cipher()
        result.cipher = cipher[0] if cipher else None
        der = tls.getpeercert(binary_form=True)
        if der:
            result.certificate = describe_certificate(der, moment)
            result.name_matches = names_match(result.host, result.certificate.names)
        if not result.verified and result.verify_error is None:
            result.verify_error = "not verified"
        return result
    result.status, result.error = "unreachable", last_error or "no address answered"
    return result
