"""An authoritative DNS server on 127.0.0.1 for tests, the demo and the benchmark: zones from
plain data, served over UDP and TCP, with latency, SERVFAIL and timeouts on demand."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.dns import TLSA

from connectors.pki import LocalCA

Record = tuple[str, str, Any]  # (owner name, type, value)

# Record types as zone data names them -> dnslib's type and how to build the rdata.
_BUILD: dict[str, Any] = {
    "A": lambda v: A(v),
    "AAAA": lambda v: AAAA(v),
    "CNAME": lambda v: CNAME(v),
    "PTR": lambda v: PTR(v),
    "MX": lambda v: MX(v[1], v[0]),
    "TXT": lambda v: TXT(_strings(v)),
    "SPF": lambda v: TXT(_strings(v)),
    "TLSA": lambda v: TLSA(*v),
}


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


@dataclass
class Zone:
    """name -> [(type, value)]. Types: A, AAAA, CNAME, MX ([preference, host]), TXT and SPF
    (a string or a list of strings), PTR, TLSA ([usage, selector, type, hex]), and the markers
    TIMEOUT (never answer) and SERVFAIL."""

    records: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)

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
        self.records.setdefault(name.lower().rstrip("."), []).append((rtype, value))

    def answer(self, name: str, qtype: str) -> tuple[str, list[Record]]:
        """(rcode, records) for a question, following CNAMEs within the zone."""
        key = name.lower().rstrip(".")
        if self._broken(key):
            return "SERVFAIL", []
        entries = self.records.get(key)
        if entries is None:
            return "NXDOMAIN", []
        types = {t for t, _ in entries}
        if "TIMEOUT" in types and self._times_out(entries, qtype):
            return "TIMEOUT", []
        cname = [(t, v) for t, v in entries if t == "CNAME"]
        if cname and qtype != "CNAME":
            rcode, rest = self.answer(str(cname[0][1]), qtype)
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

    def _broken(self, key: str) -> bool:
        """SERVFAIL marks a broken zone: the name and every name below it fail."""
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


class DnsSandbox:
    """Serve a Zone on 127.0.0.1 (UDP and TCP on the same port)."""

    def __init__(self, zone: Zone, *, port: int = 0, latency_ms: int = 0) -> None:
        self.zone = zone
        self.latency_ms = latency_ms
        self.queries = 0
        self._lock = threading.Lock()
        sandbox = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = sandbox.reply(data, max_size=1232)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                header = self.request.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = sandbox.reply(data, max_size=65535)
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", port), Udp)
        self._udp.daemon_threads = True
        self.port = self._udp.server_address[1]
        self._tcp = socketserver.ThreadingTCPServer(
            ("127.0.0.1", self.port), Tcp, bind_and_activate=False
        )
        self._tcp.allow_reuse_address = True
        self._tcp.daemon_threads = True
        self._tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.server_bind()
        self._tcp.server_activate()

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(self, data: bytes, max_size: int) -> bytes | None:
        with self._lock:
            self.queries += 1
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        try:
            request = DNSRecord.parse(data)
        except Exception:  # not a DNS message: nothing to answer
            return None
        question = request.q
        qtype = QTYPE[question.qtype]
        rcode, records = self.zone.answer(str(question.qname), qtype)
        if rcode == "TIMEOUT":
            return None
        reply = request.reply()
        reply.header.ra = 0
        reply.header.aa = 1
        if rcode in ("NXDOMAIN", "SERVFAIL"):
            reply.header.rcode = getattr(RCODE, rcode)
        for name, rtype, value in records:
            rdata = _BUILD[rtype](value)
            rr_type = "TXT" if rtype == "SPF" else rtype
            reply.add_answer(RR(name, getattr(QTYPE, rr_type), rdata=rdata, ttl=300))
        packed: bytes = reply.pack()
        if len(packed) > max_size:
            truncated = request.reply()
            truncated.header.tc = 1
            small: bytes = truncated.pack()
            return small
        return packed

    def start(self) -> DnsSandbox:
        for server in (self._udp, self._tcp):
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> DnsSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class WebHost:
    """What an HTTPS host of the sandbox answers for every path, and with which certificate:
    `valid`, `expired`, or `wrong-name` (issued for another host)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain"
    location: str | None = None
    certificate: str = "valid"


class HttpsSandbox:
    """HTTPS on 127.0.0.1 for any number of host names (chosen by SNI), with certificates from
    a local CA: MTA-STS policy hosts, in tests, the demo and the benchmark."""

    def __init__(self, ca: LocalCA, hosts: Mapping[str, WebHost], port: int = 0) -> None:
        self.ca = ca
        self.hosts = dict(hosts)
        self._contexts = {host: self._context(host, spec) for host, spec in self.hosts.items()}
        default = self._context("localhost", WebHost())
        default.sni_callback = self._pick  # type: ignore[assignment]
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                spec = sandbox.hosts.get(host)
                if spec is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(spec.status)
                self.send_header("Content-Type", spec.content_type)
                if spec.location:
                    self.send_header("Location", spec.location)
                self.send_header("Content-Length", str(len(spec.body)))
                self.end_headers()
                self.wfile.write(spec.body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = super().get_request()
                return default.wrap_socket(sock, server_side=True), address

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]

    def _context(self, host: str, spec: WebHost) -> ssl.SSLContext:
        if spec.certificate == "expired":
            issued = self.ca.issue([host], not_before_days=-400, not_after_days=-30)
        elif spec.certificate == "wrong-name":
            issued = self.ca.issue([f"other.{host}"])
        else:
            issued = self.ca.issue([host])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as handle:
            handle.write(issued.cert_pem + issued.key_pem)
        context.load_cert_chain(handle.name)
        Path(handle.name).unlink()
        return context

    def _pick(self, sock: ssl.SSLSocket, server_name: str | None, _context: ssl.SSLContext) -> None:
        chosen = self._contexts.get((server_name or "").lower())
        if chosen is not None:
            sock.context = chosen

    def start(self) -> HttpsSandbox:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpsSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class MailHost:
    """An SMTP server of the sandbox: its name, whether it offers STARTTLS, and its
    certificate (`valid`, `expired`, `wrong-name`, or `expiring`: valid for 5 more days)."""

    name: str
    starttls: bool = True
    certificate: str = "valid"


class SmtpSandbox:
    """SMTP servers on 127.0.0.x (one loopback address each, all on one port), speaking just
    enough ESMTP for a STARTTLS probe."""

    def __init__(self, ca: LocalCA, hosts: Mapping[str, MailHost], port: int = 0) -> None:
        self.ca = ca
        self.hosts = dict(hosts)  # address -> host
        self.port = port or _free_port()
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._contexts = {address: self._context(h) for address, h in self.hosts.items()}

    def _context(self, host: MailHost) -> ssl.SSLContext:
        days = {"expired": (-400, -30), "expiring": (-10, 5)}.get(host.certificate, (-1, 90))
        names = [f"other.{host.name}"] if host.certificate == "wrong-name" else [host.name]
        issued = self.ca.issue(names, not_before_days=days[0], not_after_days=days[1])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as handle:
            handle.write(issued.cert_pem + issued.key_pem)
        context.load_cert_chain(handle.name)
        Path(handle.name).unlink()
        return context

    async def _serve(
        self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host = self.hosts[address]

        async def send(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            await send(f"220 {host.name} ESMTP commsaudit sandbox")
            while True:
                line = (await reader.readline()).decode("latin-1").strip()
                verb = line.split(" ", 1)[0].upper()
                if not line:
                    return
                if verb in ("EHLO", "HELO"):
                    extras = (
                        ["STARTTLS"]
                        if host.starttls and writer.get_extra_info("ssl_object") is None
                        else []
                    )
                    lines = [host.name, *extras, "8BITMIME"]
                    for index, text in enumerate(lines):
                        await send(f"250{'-' if index < len(lines) - 1 else ' '}{text}")
                elif verb == "STARTTLS" and host.starttls:
                    await send("220 2.0.0 Ready to start TLS")
                    await writer.start_tls(self._contexts[address])
                elif verb == "QUIT":
                    await send("221 2.0.0 Bye")
                    return
                else:
                    await send("502 5.5.2 Not implemented here")
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def _handler(
        self, address: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(address, reader, writer)

        return handle

    def start(self) -> SmtpSandbox:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            for address in self.hosts:
                server = self._loop.run_until_complete(
                    asyncio.start_server(self._handler(address), address, self.port)
                )
                self._servers.append(server)
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="smtp-sandbox").start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        def close() -> None:
            for server in self._servers:
                server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)

    def __enter__(self) -> SmtpSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
