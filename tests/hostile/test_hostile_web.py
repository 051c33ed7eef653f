"""Hostile HTTPS answers to the email-posture connector: a domain's MTA-STS policy host and a
DNS over HTTPS resolver. An answer longer than its cap is refused as it streams in (no policy
is over 64 KiB, no DNS message over 65,535 bytes), one announced as longer is refused before
its body, and one sent compressed is refused unexpanded. Every server listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.message
import dns.rrset
import pytest

from connectors.dns import mta_sts
from connectors.dns.resolver import Answer, DnsLookupError, Resolver
from connectors.pki import LocalCA

HOST = "mta-sts.hostile.example"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.hostile.example\r\nmax_age: 86400\r\n"
# Far beyond what any fetch here needs: only there so a regression fails instead of hanging.
HANG_GUARD = 30.0


@dataclass
class Hostile:
    """What the server answers: `behaviour` is read at each request."""

    behaviour: str = "policy"
    sent: list[int] = field(default_factory=list)  # body bytes written, a request each
    peers: list[int] = field(default_factory=list)  # the client's port, a request each


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hostile, int, str]]:
    ca = LocalCA()
    context = ca.issue([HOST, "127.0.0.1"]).server_context()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    bundle.write_bytes(ca.pem)
    state = Hostile()
    bomb = _gzip_bomb(64)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def _answer(self, body: bytes) -> None:
            behaviour, sent = state.behaviour, 0
            state.peers.append(self.client_address[1])
            try:
                if behaviour == "policy":
                    self._send(200, POLICY, "text/plain")
                    sent = len(POLICY)
                elif behaviour == "doh":
                    query = dns.message.from_wire(body)
                    reply = dns.message.make_response(query)
                    reply.answer.append(
                        dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.25")
                    )
                    wire = reply.to_wire()
                    self._send(200, wire, "application/dns-message")
                    sent = len(wire)
                elif behaviour == "announced":  # says 50 MB, sends a little, then waits
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(50 * 1024 * 1024))
                    self.end_headers()
                    self.wfile.write(POLICY)
                    sent = len(POLICY)
                    time.sleep(2)
                elif behaviour == "gzip":  # 64 MiB of spaces, about 64 KiB on the wire
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(bomb)))
                    self.end_headers()
                    self.wfile.write(bomb)
                    sent = len(bomb)
                else:  # endless: chunked, 64 KiB at a time, until the reader goes away
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"x" * 65536
                    deadline = time.monotonic() + HANG_GUARD
                    while time.monotonic() < deadline:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                pass
            finally:
                state.sent.append(sent)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield state, server.server_address[1], str(bundle)
    finally:
        server.shutdown()
        server.server_close()


def _gzip_bomb(mebibytes: int) -> bytes:
    """`mebibytes` MiB of spaces, gzipped a MiB at a time (never held expanded)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    megabyte = b" " * (1024 * 1024)
    return b"".join(packer.compress(megabyte) for _ in range(mebibytes)) + packer.flush()


class _OneHost:
    """A resolver's two answers MTA-STS needs: the record, and the policy host's address."""

    async def query(self, name: str, rdtype: str) -> Answer:
        return Answer(name, rdtype, "ok", ("v=STSv1; id=20261130",), False, ())

    async def addresses(self, host: str) -> list[str]:
        return ["127.0.0.1"]


def _analyse(web: tuple[Hostile, int, str], behaviour: str) -> tuple[mta_sts.Analysis, float]:
    state, port, bundle = web
    state.behaviour = behaviour
    fetch = mta_sts.Fetch(port=port, ca_bundle=bundle, timeout=HANG_GUARD)
    tracemalloc.start()
    try:
        analysis = asyncio.run(
            mta_sts.analyse(
                "hostile.example",
                _OneHost(),  # type: ignore[arg-type]
                ["mail.hostile.example"],
                fetch,
            )
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return analysis, peak / 1024 / 1024


def test_the_hostile_server_serves_a_good_policy_too(web: tuple[Hostile, int, str]) -> None:
    # The fixture's server and the capped client agree on an ordinary policy: the refusals
    # below are the caps', not a broken setup's.
    analysis, _peak = _analyse(web, "policy")
    assert analysis.status != "invalid", analysis.problems
    assert analysis.policy["mode"] == "enforce"


def test_an_endless_policy_is_refused_at_64_kib_as_it_streams(
    web: tuple[Hostile, int, str],
) -> None:
    started = time.monotonic()
    analysis, peak_mib = _analyse(web, "endless")
    assert time.monotonic() - started < 10
    assert analysis.status == "invalid"
    assert analysis.problems == [
        "fetching the policy failed: the answer from mta-sts.hostile.example is over 64 KiB"
    ]
    assert peak_mib < 8, peak_mib  # not the gigabytes the server would go on sending


def test_a_policy_announced_as_too_long_is_refused_before_its_body(
    web: tuple[Hostile, int, str],
) -> None:
    started = time.monotonic()
    analysis, _peak = _analyse(web, "announced")
    assert time.monotonic() - started < 1.5  # not waiting for the rest of the 50 MB
    assert analysis.problems == [
        "fetching the policy failed: the answer from mta-sts.hostile.example is 52428800 bytes, over 64 KiB"
    ]


def test_a_compressed_policy_is_refused_unexpanded(web: tuple[Hostile, int, str]) -> None:
    analysis, peak_mib = _analyse(web, "gzip")
    assert analysis.problems == [
        "fetching the policy failed: the answer from mta-sts.hostile.example came gzip-encoded, unasked"
    ]
    assert peak_mib < 8, peak_mib  # the 64 MiB it would expand to were never made


def _doh(web: tuple[Hostile, int, str], behaviour: str) -> Answer:
    state, port, bundle = web
    state.behaviour = behaviour
    resolver = Resolver(
        nameservers=[f"https://127.0.0.1:{port}/dns-query"],
        ca_bundle=bundle,
        timeout=5,
        retries=0,
    )
    return asyncio.run(resolver.query("doh.hostile.example", "A"))


def test_dns_over_https_is_answered_through_the_capped_client(
    web: tuple[Hostile, int, str],
) -> None:
    answer = _doh(web, "doh")
    assert (answer.status, answer.records) == ("ok", ("192.0.2.25",))


def test_dns_over_https_asks_every_question_over_one_connection(
    web: tuple[Hostile, int, str],
) -> None:
    """A TLS handshake a question would cost a round trip or two each, on a run of dozens."""
    state, port, bundle = web
    state.behaviour = "doh"
    resolver = Resolver(nameservers=[f"https://127.0.0.1:{port}/dns-query"], ca_bundle=bundle)
    names = [f"host{i}.hostile.example" for i in range(5)]

    async def ask() -> list[Answer]:
        try:
            return [await resolver.query(name, "A") for name in names]
        finally:
            await resolver.aclose()

    del state.peers[:]
    answers = asyncio.run(ask())
    assert [a.status for a in answers] == ["ok"] * 5
    assert len(state.peers) == 5 and len(set(state.peers)) == 1, state.peers


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("endless", "the answer from 127.0.0.1 is over 65535 bytes"),
        ("announced", "the answer from 127.0.0.1 is 52428800 bytes, over 65535 bytes"),
        ("gzip", "the answer from 127.0.0.1 came gzip-encoded, unasked"),
    ],
)
def test_a_dns_over_https_answer_past_the_largest_message_is_a_lookup_error_saying_so(
    web: tuple[Hostile, int, str], behaviour: str, why: str
) -> None:
    # At once, not after asking the same server again until the lookup's lifetime is spent.
    started = time.monotonic()
    with pytest.raises(DnsLookupError) as raised:
        _doh(web, behaviour)
    assert time.monotonic() - started < 3
    assert why in raised.value.reason, raised.value.reason
