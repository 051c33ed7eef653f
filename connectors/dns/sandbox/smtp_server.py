"""SMTP servers on 127.0.0.x for the sandbox: one loopback address per MX host, all on one
port, speaking just enough ESMTP for a STARTTLS probe, or misbehaving on purpose (a silent
server, endless or garbled replies) so the probe can be tried against what a hostile or broken
server sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from connectors.pki import LocalCA

# How a misbehaving server goes wrong:
#   silent          accepts the connection and never says a word
#   drip            a multi-line banner, one short line every DRIP_SECONDS, never ending
#   endless-banner  a multi-line banner streamed as fast as the client reads, never ending
#   endless-ehlo    a normal banner, then an EHLO reply streamed without end
#   garbage         a banner of bytes that are no SMTP reply (no code, not ASCII)
#   long-line       a banner that is one 100 KB line
BEHAVIOURS = ("normal", "silent", "drip", "endless-banner", "endless-ehlo", "garbage", "long-line")
# Endless replies stop after this much, so a client that never stops reading (a bug the tests
# look for) ends with a wrong answer, not with the machine's memory.
STREAM_CAP = 64 * 1024 * 1024
DRIP_SECONDS = 0.2
_FILLER = b"-" + b"x" * 72 + b"\r\n"


@dataclass
class MailHost:
    """An SMTP server of the sandbox: its name, whether it offers STARTTLS, its certificate
    (`valid`, `expired`, `wrong-name`, or `expiring`: valid for 5 more days), and how it
    behaves (`normal`, or one of the failures in BEHAVIOURS)."""

    name: str
    starttls: bool = True
    certificate: str = "valid"
    behaviour: str = "normal"

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(
                f"mail host {self.name}: behaviour {self.behaviour!r} is not one of {BEHAVIOURS}"
            )


@dataclass
class Conversation:
    """What one connection to a misbehaving host came to: bytes the server got out, and
    whether the client hung up before the server was done."""

    sent: int = 0
    hung_up: bool = False


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
        # address -> each connection's conversation, for tests that check the client stopped.
        self.conversations: dict[str, list[Conversation]] = {}

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
        if host.behaviour != "normal":
            await self._misbehave(address, host, reader, writer)
            return

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

    async def _misbehave(
        self,
        address: str,
        host: MailHost,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        talk = Conversation()
        self.conversations.setdefault(address, []).append(talk)

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()
            talk.sent += len(data)

        try:
            if host.behaviour == "drip":
                while talk.sent < STREAM_CAP:
                    await send(b"220" + _FILLER)
                    await asyncio.sleep(DRIP_SECONDS)
            elif host.behaviour == "endless-banner":
                await _stream(send, b"220", talk)
            elif host.behaviour == "endless-ehlo":
                await send(f"220 {host.name} ESMTP commsaudit sandbox\r\n".encode())
                await reader.readline()
                await _stream(send, b"250", talk)
            elif host.behaviour == "garbage":
                await send(b"\xff\xfe\x00HELLO? \x1b[31m not smtp\r\n")
            elif host.behaviour == "long-line":
                await send(b"220 " + b"x" * 100_000 + b"\r\n")
            # Then say nothing more (`silent` says nothing at all) until the client hangs up.
            while await reader.read(4096):
                pass
            talk.hung_up = True
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            talk.hung_up = True
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
        async def close() -> None:
            for server in self._servers:
                server.close()
            # A silent host's conversation waits for a client that may never hang up: end it
            # here, or the loop is dropped with it pending (and says so on stderr).
            talks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in talks:
                task.cancel()
            await asyncio.gather(*talks, return_exceptions=True)

        done = asyncio.run_coroutine_threadsafe(close(), self._loop)
        with contextlib.suppress(Exception):
            done.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def __enter__(self) -> SmtpSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


async def _stream(
    send: Callable[[bytes], Awaitable[None]], code: bytes, talk: Conversation
) -> None:
    """Continuation lines of a reply that never ends (up to STREAM_CAP, as a safety net)."""
    chunk = (code + _FILLER) * 64
    while talk.sent < STREAM_CAP:
        await send(chunk)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
