"""The one async HTTP layer every Microsoft 365 request of a run goes through.

It sits under both the Graph SDK (as the transport of its httpx client, below kiota's
middleware) and the Exchange admin API client, and it enforces what must hold for all of them:
reads only, a concurrency limit per host, retries with backoff on 429/503/504 and on dropped
connections (honouring Retry-After), a timeout per request, and a budget of requests per run.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = (429, 503, 504)

# Set inside a task to be told when its request has been written out (see `_tell_when_sent`).
on_request_sent: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "on_request_sent", default=None
)


@dataclass(frozen=True)
class Limits:
    per_host: int = 8
    budget: int = 20_000
    timeout_seconds: float = 60.0
    retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0


class ReadOnlyViolation(Exception):
    """A request that is not a read was about to be sent: it never leaves the machine."""


class BudgetExceeded(Exception):
    """The run's request budget is spent."""


def read_only_problem(request: httpx.Request) -> str | None:
    """Why `request` is not a read, or None. GETs are reads; so are a Graph `$batch` of GETs
    and an admin-API InvokeCommand of a Get- cmdlet (both must be POSTs)."""
    if request.method == "GET":
        return None
    path = request.url.path
    if request.method != "POST":
        return f"{request.method} {path}"
    try:
        body = json.loads(request.content or b"null")
    except (ValueError, httpx.RequestNotRead):
        return f"POST {path} with a body that is not JSON"
    if path.endswith("/$batch"):
        methods = [str(r.get("method", "")).upper() for r in (body or {}).get("requests", [])]
        bad = [m for m in methods if m != "GET"]
        return f"$batch containing {', '.join(bad)}" if bad or not methods else None
    if path.lower().endswith("/invokecommand"):
        name = str(((body or {}).get("CmdletInput") or {}).get("CmdletName", ""))
        return None if name.startswith("Get-") else f"cmdlet {name or '(none)'}"
    return f"POST {path}"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After value: seconds (Graph sends decimals such as 2.128) or an HTTP date."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None
    return seconds if 0 <= seconds < float("inf") else None


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    by_host: dict[str, int] = field(default_factory=dict)


class GuardedTransport(httpx.AsyncBaseTransport):
    """`open_pool` makes the connection pool of one host. Each host gets its own: httpcore
    rescans every connection of a pool on each request, so one shared pool for five hosts
    spends its time on bookkeeping once a run keeps a few dozen connections open."""

    def __init__(
        self,
        open_pool: Callable[[], httpx.AsyncBaseTransport],
        limits: Limits,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._open_pool = open_pool
        self._pools: dict[str, httpx.AsyncBaseTransport] = {}
        self.limits = limits
        self.stats = Stats()
        self._sleep = sleep
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _spend(self, host: str) -> None:
        if self.stats.requests >= self.limits.budget:
            raise BudgetExceeded(
                f"the run's budget of {self.limits.budget} Microsoft 365 requests is spent; "
                "raise [m365.limits] request_budget"
            )
        self.stats.requests += 1
        self.stats.by_host[host] = self.stats.by_host.get(host, 0) + 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        problem = read_only_problem(request)
        if problem is not None:
            raise ReadOnlyViolation(f"refused to send a request that is not a read: {problem}")
        sent = on_request_sent.get()
        if sent is not None:
            _tell_when_sent(request, sent)
        host = request.url.netloc.decode()
        slot = self._slots.setdefault(host, asyncio.Semaphore(self.limits.per_host))
        pool = self._pool(host)
        attempt = 0
        while True:
            self._spend(host)
            try:
                async with slot:
                    response = await pool.handle_async_request(request)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError):
                if attempt >= self.limits.retries:
                    raise
                await self._sleep(self._backoff(attempt))
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.limits.retries:
                    return response
                await response.aread()
                await response.aclose()
                wait = _retry_after(response)
                await self._sleep(
                    min(wait, self.limits.max_backoff_seconds)
                    if wait is not None
                    else self._backoff(attempt)
                )
            attempt += 1
            self.stats.retries += 1

    async def wait_to_retry(self, attempt: int, retry_after: float | None) -> bool:
        """For retries this layer cannot see, such as an item of a Graph `$batch` answered 429
        inside a 200: wait as the answer asks (or back off), and say whether to try again."""
        if attempt >= self.limits.retries:
            return False
        self.stats.retries += 1
        await self._sleep(
            min(retry_after, self.limits.max_backoff_seconds)
            if retry_after is not None
            else self._backoff(attempt)
        )
        return True

    def open_pool(self, url: str) -> None:
        """Make the pool for `url`'s host now (on first use it costs an import of httpcore and
        its TLS setup), so that the work can overlap something that waits, such as a sign-in."""
        self._pool(httpx.URL(url).netloc.decode())

    def _pool(self, host: str) -> httpx.AsyncBaseTransport:
        pool = self._pools.get(host)
        if pool is None:
            pool = self._pools[host] = self._open_pool()
        return pool

    def _backoff(self, attempt: int) -> float:
        base = self.limits.backoff_seconds * (2**attempt)
        jitter: float = 0.5 + random.random()  # noqa: S311 - spreading retries, not secrecy
        return float(min(self.limits.max_backoff_seconds, base * jitter))

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def _tell_when_sent(request: httpx.Request, sent: Callable[[], None]) -> None:
    """Call `sent` once the request is written to its connection, through httpcore's `trace`
    extension (its documented hook into each step of an exchange)."""
    inner = request.extensions.get("trace")

    async def trace(event: str, info: dict[str, Any]) -> None:
        if inner is not None:
            await inner(event, info)
        if event == "http11.send_request_body.complete":  # HTTP/1.1, all this client speaks
            sent()

    request.extensions = {**request.extensions, "trace": trace}


def make_clients(
    limits: Limits, ca_bundle: str | None
) -> tuple[GuardedTransport, httpx.AsyncClient, httpx.AsyncClient]:
    """(the shared guarded transport, a client for the Graph SDK, a client for the admin API)."""
    context = (
        ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    )

    def open_pool() -> httpx.AsyncBaseTransport:
        # The per-host semaphore caps requests waiting for their answer; bodies are read after
        # it is released, so the pool has room for as many again.
        cap = httpx.Limits(
            max_connections=limits.per_host * 2, max_keepalive_connections=limits.per_host
        )
        return httpx.AsyncHTTPTransport(verify=context, limits=cap, retries=0)

    transport = GuardedTransport(open_pool, limits)
    timeout = httpx.Timeout(limits.timeout_seconds)
    graph = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
    admin = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
    return transport, graph, admin
