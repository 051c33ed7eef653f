"""HTTPS on 127.0.0.1 for the sandbox's MTA-STS policy hosts: any number of host names, each
chosen by SNI, with certificates from a local CA."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connectors.pki import LocalCA


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
            request_queue_size = 256  # benchmarks open hundreds of connections at once

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = super().get_request()
                # The handshake happens in the request's thread, not in the accepting one.
                wrapped = default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return wrapped, address

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]

    def _context(self, host: str, spec: WebHost) -> ssl.SSLContext:
        if spec.certificate == "expired":
            issued = self.ca.issue([host], not_before_days=-400, not_after_days=-30)
        elif spec.certificate == "wrong-name":
            issued = self.ca.issue([f"other.{host}"])
        else:
            issued = self.ca.issue([host])
        return issued.server_context()

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
