"""HTTP answers from servers the audit does not control (a domain's MTA-STS host, a DNS over
HTTPS resolver), read with a cap: a body over the cap is refused as it streams in, before it
is held whole, and a body is taken only as sent, never decompressed (a small compressed body
can expand a thousandfold)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx


class AnswerRefused(httpx.RequestError):
    """The server sent (or announced) more than the cap, or sent its answer compressed."""


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, host: str) -> None:
        self._inner = inner
        self._limit = limit
        self._host = host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise AnswerRefused(f"the answer from {self._host} is over {_size(self._limit)}")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, with every answer's body capped at `limit` bytes and refused
    when it comes content-encoded (it is asked for as is)."""

    def __init__(
        self, limit: int, verify: ssl.SSLContext | bool = True, http2: bool = False
    ) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=verify, http2=http2)
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        host = _host(request)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        declared = response.headers.get("Content-Length", "")
        problem = None
        if encoding not in ("", "identity"):
            problem = f"the answer from {host} came {encoding}-encoded, unasked"
        elif declared.isdigit() and int(declared) > self._limit:
            problem = f"the answer from {host} is {declared} bytes, over {_size(self._limit)}"
        if problem is not None:
            await response.aclose()
            raise AnswerRefused(problem, request=request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._limit, host),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def capped_client(
    limit: int, verify: ssl.SSLContext | bool = True, timeout: float = 10.0, http2: bool = False
) -> httpx.AsyncClient:
    """A client that follows no redirect and reads no body over `limit` bytes; with `http2`,
    it offers HTTP/2 (and takes HTTP/1.1 from a server that offers only that)."""
    return httpx.AsyncClient(
        transport=CappedTransport(limit, verify, http2), timeout=timeout, follow_redirects=False
    )


def _host(request: httpx.Request) -> str:
    """The host the request was for: its Host header's name when the URL names an address
    (an MTA-STS host is reached at each of its addresses in turn)."""
    header = request.headers.get("Host", "")
    return httpx.URL(f"https://{header}/").host if header else request.url.host


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
