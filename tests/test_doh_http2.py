"""DNS over HTTPS over HTTP/2, "the minimum RECOMMENDED version of HTTP for use with DoH" (RFC
8484 section 5.2), against a resolver that speaks nothing else (as Unbound's DoH refuses
HTTP/1.1): the run's questions, asked at once, share one connection. The server is h2's own
state machine behind TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rrset
import h2.config
import h2.connection
import h2.events

from connectors.dns.resolver import Answer, Resolver
from connectors.pki import LocalCA


@dataclass
class Http2Only:
    connections: int = 0
    questions: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        bodies: dict[int, bytes] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        bodies[event.stream_id] = b""
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id, bodies.pop(event.stream_id))
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, conn: h2.connection.H2Connection, stream: int, body: bytes) -> None:
        query = dns.message.from_wire(body)
        self.questions.append(str(query.question[0].name))
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.7"))
        wire = reply.to_wire()
        headers = [
            (":status", "200"),
            ("content-type", "application/dns-message"),
            ("content-length", str(len(wire))),
        ]
        conn.send_headers(stream, headers)
        conn.send_data(stream, wire, end_stream=True)


def test_questions_asked_at_once_share_one_http2_connection(tmp_path: Path) -> None:
    ca = LocalCA()
    context = ca.issue(["127.0.0.1"]).server_context()
    context.set_alpn_protocols(["h2"])  # HTTP/2 or nothing
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.pem)
    server = Http2Only()
    names = [f"host{i}.http2.example" for i in range(12)]

    async def run() -> list[Answer]:
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
        port = listening.sockets[0].getsockname()[1]
        resolver = Resolver(
            nameservers=[f"https://127.0.0.1:{port}/dns-query"],
            ca_bundle=str(bundle),
            timeout=5,
            retries=0,
        )
        try:
            return list(await asyncio.gather(*(resolver.query(n, "A") for n in names)))
        finally:
            await resolver.aclose()
            listening.close()
            await listening.wait_closed()

    answers = asyncio.run(run())
    assert [(a.status, a.records) for a in answers] == [("ok", ("192.0.2.7",))] * len(names)
    assert sorted(server.questions) == sorted(f"{n}." for n in names)
    assert server.connections == 1
