"""Hostile answers from the network: tokens go only to the configured endpoints over HTTPS,
next-page links that loop end their section at once, and decompression bombs stop at a cap.

Every server here runs on 127.0.0.1: the Microsoft 365 sandbox with its fault switches, and a
second listener (another port, so another origin) that records what it was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.aws.session import AwsSession
from auditor.model.errors import CollectionError, InputError
from auditor.model.section import Section
from connectors.aws.connector import AwsConnector
from connectors.base import CollectContext
from connectors.m365.clouds import endpoints_for
from connectors.m365.connector import M365Connector
from connectors.m365.exchange import AdminApi
from connectors.m365.http import (
    AnswerTooLarge,
    Destinations,
    GuardedTransport,
    Limits,
    UnsafeDestination,
    make_clients,
)
from connectors.m365.sandbox.server import SECRET_ENV, Faults, Sandbox

from helpers import REPO, run_cli

TENANT = REPO / "fixtures" / "tenants" / "fabrikam-clinic"
FAST = {"retries": 1, "backoff_seconds": 0.01, "timeout_seconds": 10}
# Sections that read these answers (and so must end as `error` when they cannot be trusted).
USERS = "graph/v1.0/users"
MAILBOXES = "exo/Get-Mailbox"


# -- a second listener, to see what a client sends where it must not --------------------------
@dataclass
class Recorder:
    server: ThreadingHTTPServer
    scheme: str
    seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox made but not started: a test sets its faults, then starts it. Its server
    certificate also serves the recorder, so TLS cannot be what keeps a token from it."""
    made = Sandbox(TENANT, page_size=10)
    try:
        yield made
    finally:
        made.stop()


def _recorder(scheme: str, certificate: Path | None) -> Iterator[Recorder]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b'{"value":[]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Recorder(server, scheme, seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_elsewhere(sandbox: Sandbox) -> Iterator[Recorder]:
    yield from _recorder("https", sandbox.files["server"])


@pytest.fixture
def http_elsewhere() -> Iterator[Recorder]:
    yield from _recorder("http", None)


# -- running the connector against the sandbox ------------------------------------------------
def _collect(sandbox: Sandbox, **limits: Any) -> CollectContext:
    config: dict[str, Any] = {
        "tenant_id": sandbox.tenant.tenant_id,
        "client_id": sandbox.client_id,
        "auth": "client-secret",
        "client_secret_env": SECRET_ENV,
        "endpoints": sandbox.endpoints(),
        "limits": {**FAST, **limits},
    }
    connector = M365Connector(config, Path())
    connector.environ = {SECRET_ENV: sandbox.client_secret}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
    )
    asyncio.run(connector.collect(ctx))
    return ctx


def _sections(ctx: CollectContext) -> dict[str, Section]:
    return {s.name: s for s in ctx.sections}


def _reading(ctx: CollectContext, recorded: str) -> dict[str, Section]:
    """The sections built from one recorded answer (by the source they name)."""
    source = (
        f"graph:GET /{recorded.removeprefix('graph/')}"
        if recorded.startswith("graph/")
        else recorded.replace("/", ":", 1)
    )
    # A section names each answer it read, joined by " + "; one answer's source can be the
    # start of another's (users, users/{id}), so each is compared whole.
    found = {s.name: s for s in ctx.sections if source in s.source.split(" + ")}
    assert found, f"no section reads {recorded}: {[s.source for s in ctx.sections]}"
    return found


def _assert_errors_naming(sections: dict[str, Section], *words: str) -> None:
    for name, section in sections.items():
        assert section.status == "error", f"{name} is {section.status}"
        for word in words:
            assert word in (section.reason or ""), f"{name}: {section.reason}"


# -- 5. credentials sent where they must not go ----------------------------------------------
def test_a_graph_next_link_to_another_port_gets_no_token(
    sandbox: Sandbox, https_elsewhere: Recorder
) -> None:
    sandbox.faults = Faults(foreign_next=(USERS,), next_origin=https_elsewhere.origin)
    ctx = _collect(sandbox.start())
    assert not [h for h in https_elsewhere.seen if "authorization" in h], "the token was sent"
    assert https_elsewhere.seen == []  # refused before the request was made
    _assert_errors_naming(_reading(ctx, USERS), https_elsewhere.host)
    assert _sections(ctx)["m365.exo.transport_config"].status == "ok"


def test_a_graph_next_link_to_plain_http_gets_no_token(
    sandbox: Sandbox, http_elsewhere: Recorder
) -> None:
    sandbox.faults = Faults(foreign_next=(USERS,), next_origin=http_elsewhere.origin)
    ctx = _collect(sandbox.start())
    assert http_elsewhere.seen == []
    _assert_errors_naming(_reading(ctx, USERS), http_elsewhere.origin)


def test_a_graph_redirect_elsewhere_is_not_followed(
    sandbox: Sandbox, https_elsewhere: Recorder
) -> None:
    # kiota's redirect handler drops the token for another origin, but still makes the request.
    sandbox.faults = Faults(redirect=(USERS,), next_origin=https_elsewhere.origin)
    ctx = _collect(sandbox.start())
    assert https_elsewhere.seen == []
    _assert_errors_naming(_reading(ctx, USERS), https_elsewhere.host)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_an_exchange_next_link_elsewhere_gets_no_token(
    scheme: str, sandbox: Sandbox, https_elsewhere: Recorder, http_elsewhere: Recorder
) -> None:
    elsewhere = https_elsewhere if scheme == "https" else http_elsewhere
    sandbox.faults = Faults(foreign_next=(MAILBOXES,), next_origin=elsewhere.origin)
    ctx = _collect(sandbox.start())
    assert elsewhere.seen == []
    _assert_errors_naming(
        {"m365.exo.mailboxes": _sections(ctx)["m365.exo.mailboxes"]}, elsewhere.host
    )


def test_the_transport_sends_nothing_beyond_the_configured_https_endpoints(
    sandbox: Sandbox, https_elsewhere: Recorder, http_elsewhere: Recorder
) -> None:
    """The one guard every request passes, whoever built it (a redirect kiota follows, a link
    a reader follows): a request to any other origin is refused before it is made."""
    endpoints = sandbox.start().endpoints()

    async def send(url: str) -> httpx.Response:
        transport, graph, _ = make_clients(
            Limits(retries=0), endpoints["ca_bundle"], Destinations.of([endpoints["graph"]])
        )
        try:
            return await graph.get(url, headers={"Authorization": "Bearer secret-token"})
        finally:
            await transport.aclose()

    for elsewhere in (https_elsewhere, http_elsewhere):
        with pytest.raises(UnsafeDestination, match=elsewhere.host.replace(".", r"\.")):
            asyncio.run(send(f"{elsewhere.origin}/v1.0/users"))
        assert elsewhere.seen == []
    # The configured hosts are reached as before.
    answer = asyncio.run(send(f"{endpoints['graph']}/v1.0/organization"))
    assert answer.status_code == 401  # reached: the sandbox checked the (fake) token


def test_endpoints_that_are_not_https_are_a_config_error(tmp_path: Path) -> None:
    config = {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "c",
        "endpoints": {"graph": "http://graph.example.test"},
    }
    with pytest.raises(InputError, match=r"graph.*graph\.example\.test"):
        M365Connector(config, tmp_path).preflight(dt.datetime.now(dt.UTC))


def test_a_plain_http_endpoint_stops_the_audit_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text(
        '[m365]\ntenant_id = "contoso.onmicrosoft.com"\nclient_id = "c"\n'
        'endpoints = { exchange = "http://exchange.example.test/x?secret=1" }\n'
        '[evidence]\nout = "out"\n'
    )
    proc = run_cli("audit", "--config", tmp_path / "commsaudit.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "http://exchange.example.test is not an https:// URL" in proc.stderr
    assert "Traceback" not in proc.stderr and "secret=1" not in proc.stderr


def test_an_aws_endpoint_must_be_https_unless_it_is_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(InputError, match=r"10\.9\.8\.7"):
        AwsConnector({"endpoint_url": "http://10.9.8.7:4566"}, tmp_path).preflight(now)
    # moto in the tests, a local stack: a loopback endpoint may be plain HTTP.
    AwsConnector({"endpoint_url": "http://127.0.0.1:5000"}, tmp_path).preflight(now)
    AwsConnector({"endpoint_url": "https://vpce.example.test"}, tmp_path).preflight(now)
    # botocore also takes an endpoint from the environment: the same rule, before any call.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.9.8.7:4566")
    with pytest.raises(CollectionError, match=r"10\.9\.8\.7"):
        AwsSession().client("sts", "us-east-1")


# -- 13b. next-page links that loop, and a spent budget ---------------------------------------
def test_a_graph_next_link_back_to_a_read_page_ends_the_section_at_once() -> None:
    with Sandbox(TENANT, faults=Faults(loop=(USERS,)), page_size=10) as sandbox:
        ctx = _collect(sandbox, request_budget=300)
        asked = len(sandbox.requests_for(USERS))
    assert asked <= 2, f"{asked} requests for a page that loops"
    _assert_errors_naming(_reading(ctx, USERS), "already read")
    assert _sections(ctx)["m365.exo.transport_config"].status == "ok"


def test_an_exchange_next_link_back_to_a_read_page_ends_the_section_not_the_connector() -> None:
    with Sandbox(TENANT, faults=Faults(loop=(MAILBOXES,)), page_size=10) as sandbox:
        ctx = _collect(sandbox, request_budget=300)
        asked = len(sandbox.requests_for(MAILBOXES))
    assert asked <= 2, f"{asked} requests for a page that loops"
    sections = _sections(ctx)
    _assert_errors_naming({"m365.exo.mailboxes": sections["m365.exo.mailboxes"]}, "already read")
    assert sections["m365.exo.transport_config"].status == "ok"
    assert sections["m365.entra.domains"].status == "ok"


def test_a_spent_budget_costs_the_sections_still_unread_not_the_connector() -> None:
    with Sandbox(TENANT, page_size=10) as sandbox:
        ctx = _collect(sandbox, request_budget=12)
    statuses = {s.status for s in ctx.sections}
    assert statuses == {"ok", "error"}, statuses
    spent = [s for s in ctx.sections if "request_budget" in (s.reason or "")]
    assert any(s.name.startswith("m365.exo.") for s in spent), [s.reason for s in spent]


def test_a_spent_budget_is_an_error_of_the_cmdlet_that_met_it() -> None:
    with Sandbox(TENANT) as sandbox:
        configured = endpoints_for("global", sandbox.endpoints())
        token = _token(sandbox, "https://outlook.office365.com/.default")

        async def bearer(_scope: str) -> str:
            return token

        async def run() -> list[Any]:
            transport, _, admin = make_clients(
                Limits(budget=1, retries=0),
                configured.ca_bundle,
                Destinations.of([configured.exchange]),
            )
            api = AdminApi(
                admin,
                bearer,
                kind="exo",
                base=configured.exchange,
                scope="https://outlook.office365.com/.default",
                tenant_id=sandbox.tenant.tenant_id,
                now=lambda: dt.datetime.now(dt.UTC),
            )
            try:
                return [
                    await api.invoke("Get-TransportConfig"),
                    await api.invoke("Get-RemoteDomain"),
                ]
            finally:
                await transport.aclose()

        first, second = asyncio.run(run())
    assert first.ok, first.error
    assert not second.ok and "request_budget" in (second.error or "")


def _token(sandbox: Sandbox, scope: str) -> str:
    answer = httpx.post(
        f"{sandbox.origin('login')}/{sandbox.tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": scope,
        },
        verify=ssl.create_default_context(cafile=sandbox.files["ca"]),
    )
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


# -- 9. decompression bombs --------------------------------------------------------------------
@pytest.mark.parametrize("recorded", [USERS, "exo/Get-TransportConfig"])
def test_a_gzip_bomb_is_an_error_naming_the_cap(recorded: str) -> None:
    faults = Faults(bomb=(recorded,), bomb_bytes=32 << 20)  # 32 MiB of spaces, 32 KiB gzipped
    with Sandbox(TENANT, faults=faults) as sandbox:
        ctx = _collect(sandbox, max_answer_mb=1)
    _assert_errors_naming(_reading(ctx, recorded), "1 MiB", "max_answer_mb")
    assert _sections(ctx)["m365.entra.domains"].status == "ok"


def _bomb(expanded: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(b'{"value":[')]
    parts += [packer.compress(block) for _ in range(expanded // len(block))]
    return b"".join(parts) + packer.compress(b"]}") + packer.flush()


class _Streamed(httpx.AsyncByteStream):
    """A body as the network hands it over: 64 KiB at a time, read by nobody in advance."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._body), 1 << 16):
            yield self._body[start : start + (1 << 16)]


def _serving(bodies: list[bytes]) -> GuardedTransport:
    """A guarded transport whose every pool answers the next of `bodies`, gzipped as given."""
    answers = iter(bodies)

    async def answer(request: httpx.Request) -> httpx.Response:
        body = _Streamed(next(answers))
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)

    return GuardedTransport(
        lambda: httpx.MockTransport(answer),
        Limits(retries=0, max_answer_bytes=1 << 20, max_run_bytes=3 << 20),
        destinations=Destinations.of(["https://graph.example.test"]),
    )


def test_a_bomb_is_stopped_at_the_cap_without_expanding_it() -> None:
    bomb = _bomb(128 << 20)  # 128 MiB once expanded

    async def read() -> None:
        client = httpx.AsyncClient(transport=_serving([bomb]))
        async with client:
            await client.get("https://graph.example.test/v1.0/users")

    tracemalloc.start()
    try:
        with pytest.raises(AnswerTooLarge, match=r"1 MiB.*max_answer_mb"):
            asyncio.run(read())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB held while refusing a bomb"


def test_answers_that_add_up_beyond_the_run_cap_are_refused() -> None:
    page = gzip.compress(json.dumps({"value": ["x" * (900 << 10)]}).encode())  # 900 KiB each

    async def read() -> list[str]:
        outcomes = []
        async with httpx.AsyncClient(transport=_serving([page] * 5)) as client:
            for _ in range(5):
                try:
                    answer = await client.get("https://graph.example.test/v1.0/users")
                    outcomes.append(f"ok {len(answer.content)}")
                except Exception as exc:
                    outcomes.append(str(exc))
        return outcomes

    outcomes = asyncio.run(read())
    assert [o.startswith("ok") for o in outcomes] == [True, True, True, False, False], outcomes
    assert "max_run_mb" in outcomes[3] and "3 MiB" in outcomes[3]


def test_a_publish_endpoint_that_is_not_https_stops_the_run_before_collecting(
    tmp_path: Path,
) -> None:
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "missing.yaml"\n[evidence]\npublish = '
        '[{s3 = "s3://evidence/", endpoint_url = "http://evidence.example.net:9000/x?sig=abc"}]\n'
    )
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "[evidence] publish #1" in proc.stderr and "not HTTPS" in proc.stderr
    assert "sig=abc" not in proc.stderr and "internal error" not in proc.stderr
