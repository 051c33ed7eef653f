"""The one async HTTP layer every Microsoft 365 request of a run goes through.

It sits under both the Graph SDK (as the transport of its httpx client, below kiota's
middleware, so below its redirect handling too) and the Exchange admin API client, and it
enforces what must hold for all of them: reads only, sent only over HTTPS to the configured
endpoints (they carry the tokens), a concurrency limit per host, retries with backoff on
429/503/504 and on dropped connections (honouring Retry-After), a timeout per request, a budget
of requests per run, and a cap on the size of each answer and of all of them, counted once
decompressed, as they are decompressed.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import random
import re
import ssl
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = (429, 503, 504)

# Set inside a task to be told when its request has been written out (see `_tell_when_sent`).
on_request_sent: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "on_request_sent", default=None
)


MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    per_host: int = 8
    budget: int = 20_000
    timeout_seconds: float = 60.0
    retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    # Decompressed bytes. A Graph page of 999 users is well under a megabyte, and a tenant of
    # 100,000 users and 50,000 mailboxes sends some hundreds of megabytes in all.
    max_answer_bytes: int = 64 * MIB
    max_run_bytes: int = 1024 * MIB


class RefusedRequest(Exception):
    """A request this layer would not send, or an answer it would not take: an error of the
    read that met it (its sections end as `error`), never of the whole run."""


class ReadOnlyViolation(RefusedRequest):
    """A request that is not a read was about to be sent: it never leaves the machine."""


class BudgetExceeded(RefusedRequest):
    """The run's request budget is spent."""


class UnsafeDestination(RefusedRequest):
    """A request (and so a token) about to go somewhere other than a configured endpoint over
    HTTPS: a next-page link or a redirect that points elsewhere."""


class AnswerTooLarge(RefusedRequest):
    """An answer, or all answers together, grew beyond the cap once decompressed."""


class RepeatedPage(RefusedRequest):
    """A next-page link pointing back at a page already read: following it would never end."""


class PageLinks:
    """The pages of one read (a Graph collection, a cmdlet's answer), each let through once:
    a next-page link back to a page already read would otherwise be followed until the run's
    request budget is spent."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, link: object) -> str:
        try:
            url = httpx.URL(link) if isinstance(link, str) else None
        except httpx.InvalidURL:
            url = None
        if url is None or not isinstance(link, str):
            raise RefusedRequest("its next-page link is not a URL")
        key = str(url)
        if key in self._seen:
            raise RepeatedPage(
                f"its next-page link points back to a page already read ({url.scheme}://"
                f"{url.netloc.decode(errors='replace')}{url.path}); not followed again"
            )
        self._seen.add(key)
        return link


# One DNS label: what "{prefix}" in the compliance_backend template may stand for.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLACEHOLDER = "prefix-placeholder-0"


@dataclass(frozen=True)
class Destinations:
    """Where this layer sends requests: the origins (HTTPS, host and port) of the configured
    endpoints, and host patterns for a template such as `https://{prefix}.ps.compliance.…`."""

    origins: frozenset[str]
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, urls: Iterable[str]) -> Destinations:
        origins: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for url in urls:
            parts = urllib.parse.urlsplit(url.replace("{prefix}", _PLACEHOLDER))
            if parts.scheme.lower() != "https" or not parts.hostname:
                raise ValueError(f"{url.split('?', 1)[0]} is not an https:// URL")
            origin = f"{parts.hostname}:{parts.port or 443}"
            if _PLACEHOLDER in origin:
                pattern = re.escape(origin).replace(re.escape(_PLACEHOLDER), _LABEL)
                patterns.append(re.compile(pattern))
            else:
                origins.add(origin)
        return cls(frozenset(origins), tuple(patterns))

    def problem(self, url: httpx.URL) -> str | None:
        """Why a request to `url` must not be made, or None."""
        shown = f"{url.scheme}://{url.netloc.decode(errors='replace')}"
        if url.scheme != "https":
            return f"refused to send a request to {shown}: not HTTPS, and requests carry tokens"
        origin = f"{url.host.lower()}:{url.port or 443}"
        if url.userinfo or not (
            origin in self.origins or any(p.fullmatch(origin) for p in self.patterns)
        ):
            return (
                f"refused to send a request to {shown}: not one of the configured Microsoft "
                "365 endpoints, which alone receive the tokens (a next-page link or redirect "
                "that points elsewhere is not followed)"
            )
        return None


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
    received_bytes: int = 0  # decompressed
    # What the readers made of the answers, for progress lines: pages and items read, and the
    # collection or cmdlet the last page belonged to.
    pages: int = 0
    items: int = 0
    reading: str = ""

    def read_page(self, what: str, items: int) -> None:
        self.pages += 1
        self.items += items
        self.reading = what

    def progress_line(self) -> str:
        reading = f"reading {self.reading}: " if self.reading else ""
        return (
            f"{reading}{self.pages:,} pages, {self.items:,} items; {self.requests:,} requests "
            f"({self.retries:,} retried), {self.received_bytes / MIB:,.1f} MiB"
        )


def _size(count: int) -> str:
    return f"{count / MIB:g} MiB"


# Decompressed bytes handed on at a time: a bomb is noticed a step past the cap, never after
# it has expanded.
_STEP = 64 * 1024


class _Inflater:
    """Content-Encoding gzip or deflate, undone a bounded step at a time."""

    def __init__(self, encoding: str) -> None:
        # 47 reads a zlib or a gzip header, whichever comes (servers send both for "deflate").
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding == "deflate" else 31)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data and not self._z.eof:
            yield self._z.decompress(data, _STEP)
            data = self._z.unconsumed_tail

    def end(self) -> bytes:
        return self._z.flush() if not self._z.eof else b""


class _CappedStream(httpx.AsyncByteStream):
    """An answer's body decompressed here, counted against the caps as it grows: httpx would
    expand each network chunk whole, and keep the lot, before anyone could look at its size."""

    def __init__(
        self,
        raw: httpx.AsyncByteStream,
        inflater: _Inflater | None,
        transport: GuardedTransport,
        request: httpx.Request,
    ) -> None:
        self._raw = raw
        self._inflater = inflater
        self._transport = transport
        self._request = request
        self._size = 0

    def _count(self, piece: bytes) -> bytes:
        limits, stats = self._transport.limits, self._transport.stats
        self._size += len(piece)
        stats.received_bytes += len(piece)
        host = self._request.url.netloc.decode(errors="replace")
        if self._size > limits.max_answer_bytes:
            raise AnswerTooLarge(
                f"the answer from {host} grew beyond {_size(limits.max_answer_bytes)} once "
                "decompressed, the cap for one answer; if the tenant really sends that much, "
                "raise [m365.limits] max_answer_mb"
            )
        if stats.received_bytes > limits.max_run_bytes:
            raise AnswerTooLarge(
                f"the answers from Microsoft 365 grew beyond {_size(limits.max_run_bytes)} in "
                "all once decompressed, the cap for one run (met reading from "
                f"{host}); if the tenant is that large, raise [m365.limits] max_run_mb"
            )
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw:
                pieces = self._inflater.feed(chunk) if self._inflater else (chunk,)
                for piece in pieces:
                    if self._count(piece):
                        yield piece
            if self._inflater is not None and (tail := self._count(self._inflater.end())):
                yield tail
        except zlib.error as exc:
            raise httpx.DecodingError(
                f"the answer from {self._request.url.host} is not valid compressed data: {exc}",
                request=self._request,
            ) from None

    async def aclose(self) -> None:
        await self._raw.aclose()


async def _capped(
    transport: GuardedTransport, request: httpx.Request, response: httpx.Response
) -> httpx.Response:
    """`response` with its body decompressed and counted by `_CappedStream` (and so without a
    Content-Encoding for httpx to undo again)."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        await response.aclose()
        raise RefusedRequest(
            f"{request.url.host} answered in the encoding {encoding[:40]!r}, which was not "
            "asked for"
        )
    headers = httpx.Headers(response.headers)
    if encoding != "identity":
        del headers["Content-Encoding"]
        headers.pop("Content-Length", None)  # the compressed length
    inflater = _Inflater(encoding) if encoding != "identity" else None
    assert isinstance(response.stream, httpx.AsyncByteStream)
    return httpx.Response(
        response.status_code,
        headers=headers,
        stream=_CappedStream(response.stream, inflater, transport, request),
        extensions=response.extensions,
        request=request,
    )


class GuardedTransport(httpx.AsyncBaseTransport):
    """`open_pool` makes the connection pool of one host. Each host gets its own: httpcore
    rescans every connection of a pool on each request, so one shared pool for six hosts
    spends its time on bookkeeping once a run keeps a few dozen connections open."""

    def __init__(
        self,
        open_pool: Callable[[], httpx.AsyncBaseTransport],
        limits: Limits,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        destinations: Destinations | None = None,
    ) -> None:
        self._open_pool = open_pool
        self._pools: dict[str, httpx.AsyncBaseTransport] = {}
        self.limits = limits
        # None: nowhere (a transport made without endpoints sends nothing).
        self.destinations = destinations or Destinations(frozenset())
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
        elsewhere = self.destinations.problem(request.url)
        if elsewhere is not None:
            raise UnsafeDestination(elsewhere)
        # Only what `_capped` can undo a step at a time (httpx offers br and zstd when their
        # packages happen to be installed).
        request.headers["Accept-Encoding"] = "gzip, deflate"
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
                response = await _capped(self, request, response)
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

    def allow(self, url: str) -> None:
        """Add `url`'s origin to where requests may go: an endpoint known only once the run has
        read something (the SharePoint admin site, from the tenant's initial domain). Raises
        ValueError for a URL that is not https://."""
        added = Destinations.of([url])
        self.destinations = Destinations(
            self.destinations.origins | added.origins, self.destinations.patterns
        )

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
    limits: Limits, ca_bundle: str | None, destinations: Destinations
) -> tuple[GuardedTransport, httpx.AsyncClient, httpx.AsyncClient]:
    """(the shared guarded transport, a client for the Graph SDK, a client for the admin API).
    Requests go to `destinations` only."""
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

    transport = GuardedTransport(open_pool, limits, destinations=destinations)
    timeout = httpx.Timeout(limits.timeout_seconds)
    graph = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
    admin = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
    return transport, graph, admin
