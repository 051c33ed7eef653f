"""An authoritative DNS server on 127.0.0.1 (UDP and TCP on one port) serving a Zone, with
added latency on demand and RRSIGs for signed zones when the question asks for DNSSEC."""

from __future__ import annotations

import socket
import socketserver
import ssl
import struct
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset

from connectors.dns.sandbox.zone import Zone, rdata

_UDP_LIMIT = 1232  # the payload size DNS flag day 2020 settled on


class DnsSandbox:
    """Serve a Zone on 127.0.0.1 (UDP and TCP on the same port; with `tls`, DNS over TLS on a
    port of its own, `tls_port`)."""

    def __init__(
        self,
        zone: Zone,
        *,
        port: int = 0,
        latency_ms: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.zone = zone
        self.latency_ms = latency_ms
        self.queries = 0
        self._lock = threading.Lock()
        sandbox = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = sandbox.reply(data, tcp=False)
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
                reply = sandbox.reply(data, tcp=True)
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        # DNS needs UDP and TCP on one port number. A free UDP port may be taken for TCP by
        # another listener, so with a chosen-by-the-system port, try a few.
        for attempt in range(20):
            self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", port), Udp)
            self._udp.daemon_threads = True
            self.port = self._udp.server_address[1]
            self._tcp = socketserver.ThreadingTCPServer(
                ("127.0.0.1", self.port), Tcp, bind_and_activate=False
            )
            self._tcp.allow_reuse_address = True
            self._tcp.daemon_threads = True
            self._tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self._tcp.server_bind()
            except OSError:
                self._tcp.server_close()
                self._udp.server_close()
                if port != 0 or attempt == 19:
                    raise
                continue
            break
        # More than socketserver's default backlog of 5: connections beyond it wait out the
        # kernel's one-second SYN retry.
        self._tcp.request_queue_size = 128
        self._tcp.server_activate()
        self._servers: list[socketserver.BaseServer] = [self._udp, self._tcp]
        self.tls_port: int | None = None
        if tls is not None:

            class TlsServer(socketserver.ThreadingTCPServer):
                daemon_threads = True
                request_queue_size = 128

                def get_request(self) -> tuple[socket.socket, object]:
                    sock, address = super().get_request()
                    assert tls is not None
                    return tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    ), address

            dot = TlsServer(("127.0.0.1", 0), Tcp)
            self.tls_port = dot.server_address[1]
            self._servers.append(dot)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(self, data: bytes, *, tcp: bool) -> bytes | None:
        with self._lock:
            self.queries += 1
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        try:
            request = dns.message.from_wire(data)
        except dns.exception.DNSException:  # not a DNS message: nothing to answer
            return None
        if not request.question:
            return None
        question = request.question[0]
        rcode, records = self.zone.answer(
            question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        )
        if rcode == "TIMEOUT":
            return None
        response = dns.message.make_response(request, our_payload=_UDP_LIMIT)
        response.flags |= dns.flags.AA
        response.set_rcode(dns.rcode.from_text(rcode))
        dnssec = request.edns >= 0 and bool(request.ednsflags & dns.flags.DO)
        if dnssec:
            response.ednsflags |= dns.flags.DO
        for owner, rtype, value in records:
            rrset = response.find_rrset(
                response.answer,
                dns.name.from_text(owner),
                dns.rdataclass.IN,
                dns.rdatatype.from_text("TXT" if rtype == "SPF" else rtype),
                create=True,
            )
            rrset.add(rdata(rtype, value), ttl=300)
        if dnssec:
            self._sign(response)
        limit = 65535 if tcp else max(512, min(request.payload, _UDP_LIMIT))
        try:
            wire: bytes = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(request, our_payload=_UDP_LIMIT)
            truncated.flags |= dns.flags.TC | dns.flags.AA
            wire = truncated.to_wire()
        return wire

    def _sign(self, response: dns.message.Message) -> None:
        for rrset in list(response.answer):
            signature = self.zone.rrsig(rrset.name, rrset)
            if signature is not None:
                response.answer.append(dns.rrset.from_rdata(rrset.name, rrset.ttl, signature))

    def start(self) -> DnsSandbox:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> DnsSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
