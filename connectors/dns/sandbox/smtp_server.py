"""SMTP servers on 127.0.0.x for the sandbox: one loopback address per MX host, all on one
port, speaking just enough ESMTP for a STARTTLS probe."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from connectors.pki import LocalCA


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
        # host name -> the certificate it presents (for publishing TLSA records that match).
        self.certificates: dict[str, x509.Certificate] = {}
        self._contexts = {address: self._context(h) for address, h in self.hosts.items()}

    def _context(self, host: MailHost) -> ssl.SSLContext:
        days = {"expired": (-400, -30), "expiring": (-10, 5)}.get(host.certificate, (-1, 90))
        names = [f"other.{host.name}"] if host.certificate == "wrong-name" else [host.name]
        issued = self.ca.issue(names, not_before_days=days[0], not_after_days=days[1])
        self.certificates[host.name] = issued.certificate
        return issued.server_context()

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
