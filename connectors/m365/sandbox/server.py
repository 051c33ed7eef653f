"""The sandbox server: a recorded tenant answered the way Microsoft's services answer.

Seven listeners on 127.0.0.1, one for each service host the connector talks to: the identity
platform (OpenID configuration and token endpoint), Microsoft Graph, the Exchange admin API, the
Security & Compliance front door, that service's "regional" host, the Teams admin API (GETs of
`/Skype.Policy/configurations/<Type>`, answered from the recorded `teams/` files), and the
tenant's SharePoint admin site (GET /_api/SPO.Tenant only, for a token whose resource is the
tenant's own admin site and that was not got with a client secret, as SharePoint does). As the real
front door does, the compliance one answers the module-file GET with a redirect naming the
tenant's region (`<prefix>.admin.protection.outlook.com:446`, whose REST API a client finds on
its regional listener at `/<prefix>/adminapi/...`), and redirects an InvokeCommand POST instead
of serving it.
Every listener checks the bearer token's audience, refuses anything that is not a read, and logs
what it was asked, with the anchor mailbox it was given (requests without one are served, as the
service serves them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import gzip
import json
import secrets
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.m365.sandbox import jwt
from connectors.m365.sandbox.pki import SandboxPki, make_pki

ROLES = (
    "login",
    "graph",
    "exchange",
    "compliance",
    "compliance-regional",
    "teams",
    "sharepoint",
)
# The region the compliance front door names, as a real one names nam12b or eur02b.
REGION_PREFIX = "sbx01b"
CLIENT_ID = "5e0c7d6f-1b2a-4c3d-9e8f-0a1b2c3d4e5f"
SECRET_ENV = "COMMSAUDIT_M365_CLIENT_SECRET"  # noqa: S105 - a variable's name
FEDERATED_ISSUER = "https://token.actions.githubusercontent.com"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
# Token resources (per national cloud) -> the audience they grant. Written from Microsoft's
# documentation and working REST clients, not from the connector's own table, so a wrong host in
# the connector fails here as it would at login.microsoftonline.*:
# - Graph: Graph docs, concepts/deployments.md (global/GCC, GCC High, DoD service roots).
# - Exchange Online: Connect-ExchangeOnline.md -ConnectionUri (outlook.office365.com, GCC High
#   outlook.office365.us); DoD's REST resource outlook-dod.office365.us (ScubaGear
#   EXORestHelper.psm1, Microsoft CSS-Exchange; DoD endpoints list, Exchange Online ID 1).
# - Security & Compliance: connect-to-scc-powershell.md (ps.compliance.protection.outlook.com,
#   GCC High ps.compliance.protection.office365.us); DoD's REST resource, the same .us host
#   (ScubaGear EXORestHelper.psm1).
# - Teams admin API: the "Skype and Teams Tenant Admin API" application's id, in every cloud
#   (Microsoft's "Application-based authentication in Teams PowerShell Module" asks for a token of
#   that resource; ScubaGear's and CIPP-API's REST clients request `48ac35b8-…/.default`).
_RESOURCE_AUDIENCE = {"48ac35b8-9aa8-4d74-927d-1f4a14a0b239": "teams"}
_SCOPE_AUDIENCE = {
    "graph.microsoft.com": "graph",
    "graph.microsoft.us": "graph",
    "dod-graph.microsoft.us": "graph",
    "outlook.office365.com": "exchange",
    "outlook.office365.us": "exchange",
    "outlook-dod.office365.us": "exchange",
    "ps.compliance.protection.outlook.com": "compliance",
    "ps.compliance.protection.office365.us": "compliance",
}
# SharePoint admin sites, per national cloud: `https://<name>-admin.<domain>` is its own token
# resource (cisagov/ScubaGear schemas/ScubaGearApiCatalog.json, "SharePoint REST API").
_SHAREPOINT_DOMAINS = ("sharepoint.com", "sharepoint.us", "sharepoint-mil.us")
# SharePoint's answers when the caller may not read (OData verbose error; its code and text as
# SharePoint sends them, e.g. in PnP's and CLI for Microsoft 365's tests) and when the token was
# got with a client secret (Microsoft's "Avoiding Access Errors with SharePoint App-Only
# Access", Microsoft Mission Critical blog, 2025).
_SPO_DENIED = {
    "error": {
        "code": "-2147024891, System.UnauthorizedAccessException",
        "message": {
            "lang": "en-US",
            "value": "Access denied. You do not have permission to perform this action or "
            "access this resource.",
        },
    }
}
_SPO_APP_ONLY_SECRET = {"error_description": "Unsupported app only token."}
# Graph paths that need a licence the tenant may lack: answered as the service answers then.
_LICENSED = {
    "graph/v1.0/reports/authenticationMethods/userRegistrationDetails": (
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "Neither tenant is B2C or tenant doesn't have premium license",
    ),
    "graph/v1.0/identity/conditionalAccess/policies": (
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "Neither tenant is B2C or tenant doesn't have premium license",
    ),
}
# PIM's reads in a tenant without Entra ID P2 answer 400 (as reported for Graph's and Azure
# Resource Manager's PIM APIs: JulianHayward/Azure-MG-Sub-Governance-Reporting#114,
# microsoft/EntraExporter#61), in Graph's error envelope. The code is the one
# Microsoft365DSC's exports match ("[AadPremiumLicenseRequired]"); the message is the newer one
# public clients quote ("The tenant needs to have Microsoft Entra ID P2 or Microsoft Entra ID
# Governance license."; the older read "The tenant needs an AAD Premium 2 license.").
_P2 = (
    "AadPremiumLicenseRequired",
    "The tenant needs to have Microsoft Entra ID P2 or Microsoft Entra ID Governance license.",
)
_LICENSED_P2 = frozenset(
    {
        "graph/v1.0/roleManagement/directory/roleEligibilityScheduleInstances",
        "graph/v1.0/roleManagement/directory/roleAssignmentScheduleInstances",
        "graph/v1.0/policies/roleManagementPolicyAssignments",
    }
)


@dataclass(frozen=True)
class Faults:
    """What to break, by recorded path glob (`graph/v1.0/users`, `exo/*`, `compliance/*`)."""

    latency_ms: int = 0
    throttle_every: int = 0
    # Every Nth item inside a Graph $batch is answered 429 (in a 200 envelope, as Graph does).
    throttle_batch_items: int = 0
    fail: tuple[str, ...] = ()
    malformed: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    # Hostile answers, for the tests of what a client must refuse. The next-page links of
    # `foreign_next` paths point at `next_origin` (another listener, or http://) instead.
    foreign_next: tuple[str, ...] = ()
    next_origin: str = ""
    # Graph GETs of these paths are redirected (302) to `next_origin`.
    redirect: tuple[str, ...] = ()
    # The next-page link of these paths points back at the page just read, for ever.
    loop: tuple[str, ...] = ()
    # These paths are answered with a gzip bomb: `bomb_bytes` of JSON whitespace, compressed.
    bomb: tuple[str, ...] = ()
    # The pages after the first of these paths come without their `value` member (the page's
    # envelope alone, and no next link), as a page of some other shape would.
    valueless: tuple[str, ...] = ()
    bomb_bytes: int = 64 * 1024 * 1024

    @staticmethod
    def matches(globs: tuple[str, ...], path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, g) for g in globs)


@dataclass(frozen=True)
class Logged:
    role: str
    method: str
    path: str
    recorded: str | None
    status: int
    detail: str = ""
    anchor: str | None = None


class _Drop(Exception):
    """Close the connection without answering."""


@dataclass
class _Answer:
    status: int
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class RecordedTenant:
    """A recorded-tenant directory, read once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        info = json.loads((directory / "tenant.json").read_text(encoding="utf-8"))
        self.tenant_id: str = info["tenant_id"]
        self.default_domain: str = info["default_domain"]
        self.display_name: str = info.get("display_name", "")
        self._cache: dict[str, Any] = {}
        self._encoded: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def body(self, recorded: str) -> Any | None:
        with self._lock:
            if recorded not in self._cache:
                path = self.directory / f"{recorded}.json"
                self._cache[recorded] = (
                    json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
                )
            return self._cache[recorded]

    def items(self, recorded: str) -> list[str]:
        """The collection's items, each already JSON-encoded: pages are then cut by joining
        strings, so a large tenant's pages cost the sandbox next to nothing."""
        with self._lock:
            encoded = self._encoded.get(recorded)
        if encoded is None:
            data = self.body(recorded)
            values = data.get("value", []) if isinstance(data, dict) else data or []
            encoded = [json.dumps(item) for item in values]
            with self._lock:
                self._encoded[recorded] = encoded
        return encoded

    def preload(self) -> None:
        """Read and encode every recorded answer up front, before the first request."""
        for path in sorted(self.directory.rglob("*.json")):
            recorded = path.relative_to(self.directory).as_posix().removesuffix(".json")
            kind = recorded.split("/")[0]
            if recorded != "tenant" and kind in (
                "graph",
                "exo",
                "compliance",
                "teams",
                "sharepoint",
            ):
                data = self.body(recorded)
                listed = isinstance(data, dict) and isinstance(data.get("value"), list)
                if isinstance(data, list) or listed:
                    self.items(recorded)


# Answers larger than this are gzipped for a client that accepts it.
_COMPRESS_FROM = 4096


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a client that opens more connections at once than
    # that (the connector opens up to 8 a host) has the rest dropped, and retries them after
    # the kernel's one-second SYN timeout.
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox, role: str, port: int, context: ssl.SSLContext) -> None:
        self.sandbox = sandbox
        self.role = role
        self.context = context
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK stall every answer by tens of milliseconds.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake must happen in the request thread (on its first read), not here: a
        # client that connects and never says hello would otherwise hold the accepting
        # thread, and with it every later connection and the sandbox's own shutdown.
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up, or failed its handshake (now met in the request thread):
        # nothing to answer and nothing to print, as when the handshake failed in accept.
        if isinstance(sys.exc_info()[1], OSError):
            self.sandbox.trace(f"{self.role}: connection from {client_address} ended early")
            return
        super().handle_error(request, client_address)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        self.server.sandbox.trace(f"{self.server.role}: {format % args}")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, method: str) -> None:
        sandbox = self.server.sandbox
        started = time.monotonic()
        body = self._body()
        try:
            answer, recorded = sandbox.answer(
                self.server, method, self.path, dict(self.headers), body
            )
        except _Drop:
            sandbox.wait_out(started)
            sandbox.record(Logged(self.server.role, method, self.path, None, 0, "dropped"))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = (
            answer.raw
            if answer.raw is not None
            else (json.dumps(answer.body).encode() if answer.body is not None else b"")
        )
        headers = {"Content-Type": "application/json; charset=utf-8", **answer.headers}
        if (
            len(payload) > _COMPRESS_FROM
            and "gzip" in self.headers.get("Accept-Encoding", "")
            and "Content-Encoding" not in headers  # an answer encoded already (a bomb)
        ):
            # As Graph and the admin API do: a large page travels compressed.
            payload = gzip.compress(payload, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        sandbox.wait_out(started)
        # Logged before the answer leaves, so a client that has its answer finds it logged.
        anchor = next((v for k, v in self.headers.items() if k.lower() == "x-anchormailbox"), None)
        sandbox.record(
            Logged(self.server.role, method, self.path, recorded, answer.status, anchor=anchor)
        )
        self.send_response(answer.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _error(status: int, code: str, message: str) -> _Answer:
    return _Answer(status, {"error": {"code": code, "message": message}})


def _query(path: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(path)
    return parts.path, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))


class ListenError(OSError):
    """A port the sandbox could not listen on (taken, or not ours to take)."""


class Sandbox:
    """Serve `directory` until stopped. Use as a context manager in tests."""

    def __init__(
        self,
        directory: Path,
        *,
        faults: Faults | None = None,
        page_size: int = 100,
        port: int = 0,
        workdir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.tenant = RecordedTenant(directory)
        self.faults = faults or Faults()
        self.page_size = page_size
        self.first_port = port
        self.client_id = CLIENT_ID
        self.client_secret = secrets.token_urlsafe(24)
        self._token_key = secrets.token_bytes(32)
        self._workdir_handle = (
            None if workdir else tempfile.TemporaryDirectory(prefix="commsaudit-sandbox-")
        )
        self.workdir = workdir or Path(self._workdir_handle.name)  # type: ignore[union-attr]
        try:
            self.pki: SandboxPki = make_pki()
            self.files = self.pki.write(self.workdir)
            self._oidc_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.federated_token_file = self.workdir / "federated-token.jwt"
            self.federated_token_file.write_text(self._federated_token())
        except BaseException:
            # A SIGTERM while the keys are made (a tenth of a second) would leave them on disk:
            # no `with` has taken the sandbox yet, and the command ends without the interpreter's
            # teardown that would otherwise remove the directory.
            self._remove_workdir()
            raise
        self.log: list[Logged] = []
        self.refused: list[Logged] = []
        self.verbose = verbose
        self._count = 0
        self._batch_items = 0
        self._bomb: bytes | None = None
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Sandbox:
        # Whatever stops the start (a port taken, a SIGTERM) stops what had started, and the
        # key files go: `with` calls __exit__ only once __enter__ has returned.
        try:
            self.tenant.preload()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.files["server"])
            for offset, role in enumerate(ROLES):
                port = self.first_port + offset if self.first_port else 0
                try:
                    server = _Server(self, role, port, context)
                except OSError as exc:
                    raise ListenError(f"127.0.0.1:{port}: {exc.strerror or exc}") from exc
                self._servers[role] = server
                thread = threading.Thread(
                    target=server.serve_forever, args=(0.05,), name=f"sandbox-{role}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self._workdir_handle is not None:
            self._workdir_handle.cleanup()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def origin(self, role: str) -> str:
        return self._servers[role].origin

    # -- what the audit needs to point at it ----------------------------------------------
    def endpoints(self) -> dict[str, str]:
        return {
            "authority": self.origin("login"),
            "graph": self.origin("graph"),
            "exchange": self.origin("exchange"),
            "compliance": self.origin("compliance"),
            # Where a region's REST API is: the regional listener, the prefix in its path.
            "compliance_backend": self.origin("compliance-regional") + "/{prefix}",
            "teams": self.origin("teams"),
            "sharepoint_admin": self.origin("sharepoint"),
            "ca_bundle": str(self.files["ca"]),
        }

    def config_toml(self, auth: str = "client-secret") -> str:
        """The [m365] table that points an audit here. Endpoints are an inline table, so more
        [m365] keys (break_glass_accounts, say) can follow it."""
        lines = [
            "[m365]",
            f"tenant_id = {json.dumps(self.tenant.tenant_id)}",
            f"client_id = {json.dumps(self.client_id)}",
            f"auth = {json.dumps(auth)}",
        ]
        if auth == "client-secret":
            lines.append(f"client_secret_env = {json.dumps(SECRET_ENV)}")
        elif auth == "certificate":
            lines.append(f"certificate_file = {json.dumps(str(self.files['client']))}")
        elif auth == "workload-identity":
            lines.append(f"federated_token_file = {json.dumps(str(self.federated_token_file))}")
        endpoints = ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.endpoints().items())
        lines.append(f"endpoints = {{ {endpoints} }}")
        return "\n".join(lines) + "\n"

    def environment(self) -> dict[str, str]:
        return {SECRET_ENV: self.client_secret}

    # -- bookkeeping ----------------------------------------------------------------------
    def trace(self, message: str) -> None:
        if self.verbose:
            print(f"sandbox {message}", file=sys.stderr, flush=True)

    def record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)
            if entry.detail.startswith("refused"):
                self.refused.append(entry)

    def requests_for(self, recorded_glob: str) -> list[Logged]:
        return [
            e for e in self.log if e.recorded and fnmatch.fnmatchcase(e.recorded, recorded_glob)
        ]

    # -- answering ------------------------------------------------------------------------
    def wait_out(self, started: float) -> None:
        """Hold an answer until `latency_ms` has passed since its request arrived: the
        latency is the service's response time, the sandbox's own work included."""
        left = self.faults.latency_ms / 1000 - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)

    def answer(
        self, server: _Server, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[_Answer, str | None]:
        path, query = _query(raw_path)
        if server.role == "login":
            return self._login(server, method, path, body), None
        if server.role != "login" and self.faults.throttle_every:
            with self._lock:
                self._count += 1
                throttled = self._count % self.faults.throttle_every == 0
            if throttled:
                return _Answer(
                    429,
                    {"error": {"code": "TooManyRequests", "message": "Too many requests"}},
                    headers={"Retry-After": "1"},
                ), None
        if server.role == "graph":
            return self._graph(server, method, path, query, headers, body)
        if server.role == "teams":
            return self._teams(server, method, path, headers)
        if server.role == "sharepoint":
            return self._sharepoint(server, method, path, headers)
        return self._admin_api(server, method, path, query, headers, body)

    def _refuse(self, server: _Server, method: str, path: str, why: str) -> _Answer:
        self.record(Logged(server.role, method, path, None, 405, f"refused: {why}"))
        return _error(405, "MethodNotAllowed", f"the sandbox is read-only: {why}")

    # identity platform
    def _login(self, server: _Server, method: str, path: str, body: bytes) -> _Answer:
        parts = [p for p in path.split("/") if p]
        tenant_ok = bool(parts) and parts[0] in (self.tenant.tenant_id, self.tenant.default_domain)
        if method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            if not tenant_ok:
                return _error(400, "invalid_tenant", f"AADSTS90002: Tenant '{parts[0]}' not found.")
            base = f"{server.origin}/{parts[0]}"
            return _Answer(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{server.origin}/{self.tenant.tenant_id}/v2.0",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/discovery/v2.0/keys",
                    "response_types_supported": [
                        "code",
                        "id_token",
                        "code id_token",
                        "id_token token",
                    ],
                    "tenant_region_scope": "NA",
                },
            )
        if method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            if not tenant_ok:
                return _Answer(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "AADSTS90002: Tenant not found.",
                    },
                )
            return self._token(server, parts[0], urllib.parse.parse_qs(body.decode()))
        return (
            self._refuse(server, method, path, "not an identity platform read")
            if method != "GET"
            else _error(404, "NotFound", path)
        )

    def _token(self, server: _Server, tenant: str, form: dict[str, list[str]]) -> _Answer:
        def one(name: str) -> str:
            return (form.get(name) or [""])[0]

        def denied(code: str, description: str) -> _Answer:
            return _Answer(
                401,
                {
                    "error": code,
                    "error_description": description,
                    "error_codes": [7000215],
                    "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                },
            )

        if one("grant_type") != "client_credentials":
            return _Answer(
                400,
                {"error": "unsupported_grant_type", "error_description": "only client_credentials"},
            )
        if one("client_id") != self.client_id:
            return _Answer(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": "AADSTS700016: Application with identifier "
                    f"'{one('client_id')}' was not found in the directory.",
                },
            )
        scope = one("scope")
        first = scope.split()[0] if scope else ""
        host = urllib.parse.urlsplit(first).hostname or ""
        audience = _SCOPE_AUDIENCE.get(host) or _RESOURCE_AUDIENCE.get(
            first.removesuffix("/.default").lower()
        )
        name, _, domain = host.partition(".")
        if domain in _SHAREPOINT_DOMAINS and name.endswith("-admin"):
            if name != f"{self.tenant.default_domain.split('.', 1)[0].lower()}-admin":
                # Another tenant's admin site (or a name that is no tenant's) is no resource
                # of this one.
                return _Answer(
                    400,
                    {
                        "error": "invalid_resource",
                        "error_description": "AADSTS500011: The resource principal named "
                        f"https://{host} was not found in the tenant named {tenant}.",
                    },
                )
            audience = "sharepoint"
        if audience is None:
            return _Answer(
                400,
                {
                    "error": "invalid_scope",
                    "error_description": "AADSTS70011: The provided value for scope "
                    f"{scope} is not valid.",
                },
            )
        token_endpoint = f"{server.origin}/{tenant}/oauth2/v2.0/token"
        if one("client_secret"):
            if not secrets.compare_digest(one("client_secret"), self.client_secret):
                return denied("invalid_client", "AADSTS7000215: Invalid client secret provided.")
            method = "client-secret"
        elif (
            one("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            assertion = one("client_assertion")
            try:
                header, claims, _signed, _sig = jwt.split(assertion)
                if claims.get("iss") == FEDERATED_ISSUER:
                    self._check_federated(assertion)
                    method = "workload-identity"
                else:
                    jwt.verify_assertion(
                        assertion,
                        self.pki.client_certificate,
                        client_id=self.client_id,
                        audiences={token_endpoint, token_endpoint.replace(":443", "")},
                    )
                    method = "certificate"
                del header
            except jwt.TokenError as exc:
                return denied("invalid_client", f"AADSTS700027: Client assertion failed: {exc}")
        else:
            return denied(
                "invalid_client", "AADSTS7000216: client_assertion or client_secret is required."
            )
        now = int(time.time())
        token = jwt.issue(
            self._token_key,
            {
                "aud": audience,
                "tid": self.tenant.tenant_id,
                "appid": self.client_id,
                "iat": now,
                "exp": now + 3600,
                "auth": method,
                "jti": str(uuid.uuid4()),
            },
        )
        return _Answer(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
        )

    def _federated_token(self) -> str:
        header = jwt.b64url(
            json.dumps({"alg": "RS256", "typ": "JWT", "kid": "sandbox-oidc"}).encode()
        )
        now = int(time.time())
        claims = jwt.b64url(
            json.dumps(
                {
                    "iss": FEDERATED_ISSUER,
                    "aud": FEDERATED_AUDIENCE,
                    "sub": "repo:example/audits:ref:refs/heads/main",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "jti": str(uuid.uuid4()),
                }
            ).encode()
        )
        signature = self._oidc_key.sign(
            f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{header}.{claims}.{jwt.b64url(signature)}"

    def _check_federated(self, assertion: str) -> None:
        header, claims, signed, signature = jwt.split(assertion)
        public = self._oidc_key.public_key()
        try:
            public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except Exception as exc:  # cryptography raises InvalidSignature
            raise jwt.TokenError("the federated token is not signed by the trusted issuer") from exc
        if claims.get("aud") != FEDERATED_AUDIENCE:
            raise jwt.TokenError(f"the federated token's aud must be {FEDERATED_AUDIENCE}")
        if float(claims.get("exp", 0)) < time.time():
            raise jwt.TokenError("the federated token has expired")
        del header

    def _authorised(self, headers: dict[str, str], audience: str) -> _Answer | None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value.lower().startswith("bearer "):
            return _error(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = jwt.check(self._token_key, value[7:].strip())
        except jwt.TokenError as exc:
            return _error(401, "InvalidAuthenticationToken", str(exc))
        if audience == "sharepoint" and claims.get("auth") == "client-secret":
            return _Answer(401, _SPO_APP_ONLY_SECRET)
        if claims.get("aud") != audience:
            return _error(
                401,
                "InvalidAuthenticationToken",
                f"Invalid audience: this endpoint needs a {audience} token.",
            )
        return None

    # Microsoft Graph
    def _graph(
        self,
        server: _Server,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[_Answer, str | None]:
        problem = self._authorised(headers, "graph")
        if problem:
            return problem, None
        if method == "POST" and path == "/v1.0/$batch":
            return self._batch(server, body), None
        if method != "GET":
            return self._refuse(
                server, method, path, "only GET and $batch of GETs are served"
            ), None
        recorded = "graph" + urllib.parse.unquote(path)
        return self._graph_get(server, recorded, path, query), recorded

    # SharePoint admin site
    def _sharepoint(
        self, server: _Server, method: str, path: str, headers: dict[str, str]
    ) -> tuple[_Answer, str | None]:
        """GET /_api/SPO.Tenant and nothing else: a CSOM ProcessQuery POST, whatever its body
        asks, and every other method are refused (they are how settings are changed)."""
        if method != "GET":
            return self._refuse(
                server, method, path, "only GET /_api/SPO.Tenant is served on the admin site"
            ), None
        if path.rstrip("/").lower() != "/_api/spo.tenant":
            return _error(404, "NotFound", path), None
        problem = self._authorised(headers, "sharepoint")
        if problem:
            return problem, None
        recorded = "sharepoint/SPO.Tenant"
        fault = self._fault(recorded)
        if fault:
            if fault.status == 403:
                fault = _Answer(403, _SPO_DENIED)
            return fault, recorded
        data = self.tenant.body(recorded)
        if data is None:
            return _Answer(403, _SPO_DENIED), recorded
        return _Answer(200, data), recorded

    def _fault(self, recorded: str) -> _Answer | None:
        if Faults.matches(self.faults.drop, recorded):
            raise _Drop
        if Faults.matches(self.faults.forbid, recorded):
            return _error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        if Faults.matches(self.faults.fail, recorded):
            return _error(503, "ServiceUnavailable", "The service is temporarily unavailable.")
        if Faults.matches(self.faults.malformed, recorded):
            return _Answer(200, raw=b'{"value": [{"id": "truncated')
        if Faults.matches(self.faults.bomb, recorded):
            return _Answer(200, raw=self._gzip_bomb(), headers={"Content-Encoding": "gzip"})
        return None

    def _gzip_bomb(self) -> bytes:
        """`{"value":[` and `bomb_bytes` of spaces and `]}`, gzipped: a valid, empty page
        once expanded (about a thousand times its size), made once, a megabyte at a time."""
        with self._lock:
            if self._bomb is None:
                packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
                parts = [packer.compress(b'{"value":[')]
                block = b" " * (1 << 20)
                for _ in range(self.faults.bomb_bytes // len(block)):
                    parts.append(packer.compress(block))
                parts.append(packer.compress(b"]}") + packer.flush())
                self._bomb = b"".join(parts)
            return self._bomb

    def _next_origin(self, server: _Server, recorded: str) -> str:
        if Faults.matches(self.faults.foreign_next, recorded) and self.faults.next_origin:
            return self.faults.next_origin.rstrip("/")
        return server.origin

    def _graph_get(
        self, server: _Server, recorded: str, path: str, query: dict[str, str]
    ) -> _Answer:
        fault = self._fault(recorded)
        if fault:
            return fault
        if Faults.matches(self.faults.redirect, recorded) and self.faults.next_origin:
            location = f"{self.faults.next_origin.rstrip('/')}{path}"
            return _Answer(302, {"error": "moved"}, headers={"Location": location})
        data = self.tenant.body(recorded)
        if data is None and recorded in _LICENSED_P2:
            return _error(400, *_P2)
        if data is None:
            code, message = _LICENSED.get(
                recorded,
                (
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                ),
            )
            return _error(403, code, message)
        if not (isinstance(data, dict) and isinstance(data.get("value"), list)):
            return _Answer(200, data)
        size = self.page_size
        if query.get("$top", "").isdigit():
            size = min(size, int(query["$top"]))
        start = int(query.get("$skiptoken", "0") or 0)
        # Graph puts the next link before the items, so a client can ask for the next page
        # before it has read this one.
        page = {k: v for k, v in data.items() if k not in ("value", "@odata.nextLink")}
        origin = self._next_origin(server, recorded)
        if Faults.matches(self.faults.loop, recorded):
            page["@odata.nextLink"] = _next_link(origin, path, query, start)
        elif start + size < len(data["value"]):
            page["@odata.nextLink"] = _next_link(origin, path, query, start + size)
        if start and Faults.matches(self.faults.valueless, recorded):
            page.pop("@odata.nextLink", None)
            return _Answer(200, page)
        items = self.tenant.items(recorded)[start : start + size]
        raw = _envelope(page, items)
        page["value"] = data["value"][start : start + size]
        return _Answer(200, page, raw=raw)

    def _batch(self, server: _Server, body: bytes) -> _Answer:
        try:
            requests = json.loads(body)["requests"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", "Invalid batch payload.")
        if not isinstance(requests, list) or len(requests) > 20:
            return _error(400, "BadRequest", "A batch holds at most 20 requests.")
        responses = []
        for item in requests:
            method = str(item.get("method", "")).upper()
            url = str(item.get("url", ""))
            if url.startswith("https://"):
                url = urllib.parse.urlsplit(url)._replace(scheme="", netloc="").geturl()
            if not url.startswith("/v1.0") and not url.startswith("/beta"):
                url = "/v1.0" + (url if url.startswith("/") else "/" + url)
            path, query = _query(url)
            recorded = "graph" + urllib.parse.unquote(path)
            throttled = False
            if self.faults.throttle_batch_items:
                with self._lock:
                    self._batch_items += 1
                    throttled = self._batch_items % self.faults.throttle_batch_items == 0
            if method != "GET":
                self.record(
                    Logged("graph", method, path, recorded, 405, "refused: write inside $batch")
                )
                answer = _error(405, "MethodNotAllowed", "the sandbox is read-only")
            elif throttled:
                # As Graph's throttling guidance describes: the item is 429 with its own
                # Retry-After (a decimal, as Graph sends), inside a 200 envelope.
                answer = _Answer(
                    429,
                    {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
                    headers={"Retry-After": "0.2"},
                )
                self.record(Logged("graph", "GET", f"$batch {path}", recorded, 429, "throttled"))
            else:
                answer = self._graph_get(server, recorded, path, query)
                self.record(Logged("graph", "GET", f"$batch {path}", recorded, answer.status))
            item_body: Any = answer.body
            if answer.raw is not None:
                item_body = answer.raw.decode(errors="replace")
            responses.append(
                {
                    "id": item.get("id"),
                    "status": answer.status,
                    "headers": {"Content-Type": "application/json", **answer.headers},
                    "body": item_body,
                }
            )
        return _Answer(200, {"responses": responses})

    # Teams admin API
    def _teams(
        self, server: _Server, method: str, path: str, headers: dict[str, str]
    ) -> tuple[_Answer, str | None]:
        if method != "GET":
            return self._refuse(server, method, path, "only GETs are served"), None
        problem = self._authorised(headers, "teams")
        if problem:
            return problem, None
        parts = [p for p in urllib.parse.unquote(path).split("/") if p]
        if len(parts) != 3 or parts[:2] != ["Skype.Policy", "configurations"]:
            return _error(404, "NotFound", path), None
        recorded = "teams/" + "/".join(parts)
        fault = self._fault(recorded)
        if fault:
            return fault, recorded
        data = self.tenant.body(recorded)
        if data is None:
            return _error(
                403, "Forbidden", "The caller's role does not allow reading this configuration."
            ), recorded
        # One piece, no paging: the configuration API answers every policy of a type at once.
        return _Answer(200, data), recorded

    # Exchange / Security & Compliance admin API
    def _admin_api(
        self,
        server: _Server,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[_Answer, str | None]:
        parts = [p for p in path.split("/") if p]
        if server.role == "compliance-regional":
            # The region's REST API lives under its prefix (see `endpoints`).
            if not parts or parts[0] != REGION_PREFIX:
                return _error(
                    404, "NotFound", f"no region {parts[0] if parts else ''!r} here"
                ), None
            parts = parts[1:]
        lowered = [p.lower() for p in parts]
        if (
            server.role == "compliance"
            and method == "GET"
            and lowered[:2] == ["adminapi", "v1.0"]
            and lowered[3:] == ["exomodulefile"]
        ):
            # The front door names the tenant's region (the admin endpoint, port 446).
            location = (
                f"https://{REGION_PREFIX}.admin.protection.outlook.com:446/AdminApi/v1.0/"
                f"{parts[2]}/EXOModuleFile"
            )
            return _Answer(302, {"error": "moved"}, headers={"Location": location}), None
        if (
            method != "POST"
            or lowered[:2] != ["adminapi", "beta"]
            or lowered[3:] != ["invokecommand"]
        ):
            if method == "GET":
                return _error(404, "NotFound", path), None
            return self._refuse(
                server, method, path, "only InvokeCommand with Get- cmdlets is served"
            ), None
        if server.role == "compliance":
            # The front door does not serve the REST API: it sends the client to the region.
            regional = f"{self.origin('compliance-regional')}/{REGION_PREFIX}{path}"
            return _Answer(302, {"error": "moved"}, headers={"Location": regional}), None
        audience = "compliance" if server.role.startswith("compliance") else "exchange"
        problem = self._authorised(headers, audience)
        if problem:
            return problem, None
        if parts[2] not in (self.tenant.tenant_id, self.tenant.default_domain):
            return _error(404, "NotFound", f"tenant {parts[2]} is not served here"), None
        try:
            cmdlet_input = json.loads(body)["CmdletInput"]
            name = str(cmdlet_input["CmdletName"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", "Invalid Operation"), None
        if not name.startswith("Get-"):
            return self._refuse(server, method, path, f"cmdlet {name} is not a Get- cmdlet"), None
        recorded = f"{'compliance' if audience == 'compliance' else 'exo'}/{name}"
        fault = self._fault(recorded)
        if fault:
            return fault, recorded
        data = self.tenant.body(recorded)
        if data is None:
            return _error(
                403,
                "Forbidden",
                f"The term '{name}' is not recognized as a cmdlet the caller's role can run.",
            ), recorded
        prefer = next((v for k, v in headers.items() if k.lower() in ("prefer", "x-prefer")), "")
        size = self.page_size
        if "maxpagesize" in prefer:
            with contextlib.suppress(ValueError):
                size = min(size, int(prefer.split("maxpagesize", 1)[1].strip(" =")))
        start = int(query.get("$skiptoken", "0") or 0)
        base = server.origin + (f"/{REGION_PREFIX}" if server.role == "compliance-regional" else "")
        envelope: dict[str, Any] = {
            "@odata.context": f"{base}/adminapi/beta/{parts[2]}"
            "/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [],
        }
        # $select names properties without regard to case, as PowerShell does.
        select = {name.lower() for name in query.get("$select", "").split(",") if name}
        parameters = cmdlet_input.get("Parameters") or {}
        undetailed = name in _DISTRIBUTED and not parameters.get("DistributionDetail")
        if select or undetailed:
            page = data[start : start + size]
            if undetailed:
                page = [_without_distribution_detail(name, item) for item in page]
            if select:
                page = [_selected(item, select) for item in page]
            items = [json.dumps(item) for item in page]
        else:
            items = self.tenant.items(recorded)[start : start + size]
        if start and Faults.matches(self.faults.valueless, recorded):
            return _Answer(200, envelope), recorded
        raw = _envelope(envelope, items)
        origin = self._next_origin(server, recorded)
        following = start if Faults.matches(self.faults.loop, recorded) else start + size
        if following < len(data):
            # The admin API puts the next link after the items; it keeps the query.
            link = json.dumps(_next_link(origin, path, query, following))
            raw = raw[:-1] + b',"@odata.nextLink":' + link.encode() + b"}"
        return _Answer(200, None, raw=raw), recorded


def _next_link(origin: str, path: str, query: dict[str, str], skip: int) -> str:
    """The link to the page after this one: the same query, moved on to `skip`."""
    params = {k: v for k, v in query.items() if k != "$skiptoken"}
    params["$skiptoken"] = str(skip)
    return f"{origin}{path}?{urllib.parse.urlencode(params, safe='$,')}"


# Cmdlets whose distribution state (and, for retention, locations) only -DistributionDetail
# reports accurately (Get-DlpCompliancePolicy, Get-RetentionCompliancePolicy and
# Get-CaseHoldPolicy references; ScubaGear's sample export shows "Pending" without it).
_DISTRIBUTED = {"Get-DlpCompliancePolicy", "Get-RetentionCompliancePolicy"}


def _without_distribution_detail(cmdlet: str, item: Any) -> Any:
    """A policy as the service answers without -DistributionDetail: status Pending, and a
    retention policy's location properties empty."""
    if not isinstance(item, dict):
        return item
    shown = {**item, "DistributionStatus": "Pending"} if "DistributionStatus" in item else item
    if cmdlet == "Get-RetentionCompliancePolicy":
        shown = {
            k: ([] if "@" not in k and k.endswith("Location") else v) for k, v in shown.items()
        }
    return shown


def _selected(item: Any, wanted: set[str]) -> Any:
    """`item` with only the properties named in `wanted` (lower case), and their `@`
    annotations."""
    if not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if k.split("@", 1)[0].lower() in wanted}


def _envelope(fields: dict[str, Any], items: list[str]) -> bytes:
    """`{...fields, "value": [items]}` from already-encoded items."""
    head = json.dumps(fields)[:-1]
    separator = "," if fields else ""
    return f'{head}{separator}"value":[{",".join(items)}]}}'.encode()
