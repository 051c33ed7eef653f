"""Microsoft Graph reads through msgraph-sdk: its request adapter, authentication provider and
middleware, over the run's guarded httpx client. Responses are kept as raw JSON (the evidence),
every `@odata.nextLink` is followed, and independent single-object reads share `$batch` calls."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as graph_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from auditor.jsonutil import loads_strict
from connectors.m365.fetched import Fetched
from connectors.m365.http import (
    RETRY_STATUSES,
    PageLinks,
    RefusedRequest,
    Stats,
    on_request_sent,
    retry_after_seconds,
)
from connectors.m365.permissions import graph_permission

BATCH_SIZE = 20
_ERRORS: dict[str, Any] = {"XXX": ODataError}


class _Tokens(AccessTokenProvider):
    def __init__(self, get: Callable[[str], Awaitable[str]], scope: str, host: str) -> None:
        self._get = get
        self._scope = scope
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return await self._get(self._scope)

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


def _error_text(exc: BaseException) -> tuple[int, str]:
    status = int(getattr(exc, "response_status_code", 0) or 0)
    if isinstance(exc, ODataError) and exc.error is not None:
        return status, f"{exc.error.code}: {exc.error.message}"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return status, str(message).splitlines()[0]


def lacks_pim_licence(text: str) -> bool:
    """Whether a 400 is PIM's refusal in a tenant without Entra ID P2 or ID Governance.

    Public clients quote it with the code AadPremiumLicenseRequired and either message ("The
    tenant needs an AAD Premium 2 license.", the older; "The tenant needs to have Microsoft
    Entra ID P2 or Microsoft Entra ID Governance license.", the newer), and some see the newer
    message under the code BadRequest: the code or either message is enough."""
    return (
        "AadPremiumLicenseRequired" in text
        or "AAD Premium 2 license" in text
        or "Entra ID P2 or Microsoft Entra ID Governance license" in text
    )


_NEXT_LINK = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")')


def _early_next_link(raw: bytes) -> str | None:
    """The `@odata.nextLink` of a page when it comes before the items, found without parsing
    the page; None when it is absent there (it may still follow the items)."""
    cut = raw.find(b'"value"')
    match = _NEXT_LINK.search(raw[:cut]) if cut > 0 else None
    if match is None:
        return None
    link = json.loads(match.group(1))
    return link if isinstance(link, str) else None


def _items_bytes(raw: bytes) -> bytes | None:
    """The bytes of a page's items when `value` is its last member (as Graph sends it): the
    merged evidence then keeps them exactly as received. None when the page is shaped otherwise."""
    start = raw.find(b'"value"')
    if start < 0:
        return None
    bracket = raw.find(b"[", start)
    end = raw.rstrip()
    if bracket < 0 or not end.endswith(b"}"):
        return None
    inner = end[:-1].rstrip()
    if not inner.endswith(b"]") or raw[start + 7 : bracket].strip(b" \t\r\n:"):
        return None
    return inner[bracket + 1 : -1].strip()


class GraphReader:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: Callable[[str], Awaitable[str]],
        base: str,
        scope: str,
        now: Callable[[], dt.datetime],
        wait_to_retry: Callable[[int, float | None], Awaitable[bool]] | None = None,
        stats: Stats | None = None,
    ) -> None:
        host = urllib.parse.urlsplit(base).hostname or ""
        auth = BaseBearerTokenAuthenticationProvider(_Tokens(token, scope, host))
        # Retries belong to the guarded transport underneath; kiota's own would double them.
        options = dict(graph_options)
        options[RetryHandlerOption.get_key()] = RetryHandlerOption(
            max_retries=0, should_retry=False
        )
        client = GraphClientFactory.create_with_default_middleware(client=http, options=options)
        self.adapter = GraphRequestAdapter(auth, client=client)
        self.base = f"{base.rstrip('/')}/v1.0"
        self.adapter.base_url = self.base
        self.client = GraphServiceClient(request_adapter=self.adapter)
        self._now = now
        self._wait_to_retry = wait_to_retry
        self.stats = stats  # pages and items read, for progress lines

    async def _get_bytes(self, url: str, sent: Callable[[], None] | None = None) -> bytes:
        if sent is not None:
            on_request_sent.set(sent)  # in this task's own context: only its request
        info = RequestInformation(Method.GET)
        info.url = url
        info.headers.try_add("Accept", "application/json")
        body = await self.adapter.send_primitive_async(info, "bytes", _ERRORS)
        return body or b""

    async def _ask_for(self, url: str) -> asyncio.Future[bytes]:
        """Start reading `url`; return once its request is on the wire (or it has ended)."""
        sent = asyncio.Event()
        page = asyncio.ensure_future(self._get_bytes(url, sent.set))
        waiting = asyncio.ensure_future(sent.wait())
        try:
            await asyncio.wait((page, waiting), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            page.cancel()
            raise
        finally:
            waiting.cancel()
        return page

    def _failed(self, recorded: str, exc: BaseException) -> Fetched:
        if isinstance(exc, RefusedRequest):
            reason = f"{recorded.removeprefix('graph/')} was not read in full: {exc}"
            return Fetched(recorded, 0, None, self._now(), reason)
        status, text = _error_text(exc)
        reason = f"{recorded.removeprefix('graph/')} answered {status or 'no response'}: {text}"
        if status == 400 and lacks_pim_licence(text):
            hint = (
                "the tenant lacks the licence for it "
                "(Microsoft Entra ID P2 or Microsoft Entra ID Governance)"
            )
            return Fetched(recorded, status, None, self._now(), f"{reason} ({hint})", True)
        if status == 403:
            unlicensed = "premium" in text.lower() or "NonPremium" in text
            hint = (
                "the tenant lacks the licence for it (Microsoft Entra ID P1 or P2)"
                if unlicensed
                else "grant the app the Microsoft Graph application permission "
                f"{graph_permission(recorded)}"
            )
            return Fetched(recorded, status, None, self._now(), f"{reason} ({hint})", unlicensed)
        return Fetched(recorded, status, None, self._now(), reason)

    async def collection(
        self,
        path: str,
        query: str = "",
        first_sent: asyncio.Event | None = None,
        on_items: Callable[[list[Any]], None] | None = None,
        version: str = "v1.0",
    ) -> Fetched:
        """GET `path` (e.g. `users`) and every following page; the body keeps all items in
        `value`, as the recorded-tenant layout has them. `first_sent` is set once the first
        request is on the wire (or could not be sent). `on_items` is given each page's items
        as the page arrives, while the next one is on its way. `version` is v1.0, or beta for
        the few members v1.0 does not have yet."""
        recorded = f"graph/{version}/{path}"
        base = self.base if version == "v1.0" else f"{self.base.removesuffix('/v1.0')}/{version}"
        first = f"{base}/{path}" + (f"?{query}" if query else "")
        merged: dict[str, Any] | None = None
        pages = 0
        chunks: list[bytes] | None = []  # each page's items, as received
        pending: asyncio.Future[bytes] | None = None
        follow = PageLinks()
        try:
            try:
                pending = await self._ask_for(follow(first))
            finally:
                if first_sent is not None:
                    first_sent.set()
            while pending is not None:
                raw = await pending
                # Graph sends the next link ahead of the items: put the request for the next
                # page on the wire, then read this one while the answer travels.
                early = _early_next_link(raw)
                pending = await self._ask_for(follow(early)) if early else None
                page = loads_strict(raw)  # NaN or Infinity: malformed, as JSON has neither
                pages += 1
                if not isinstance(page, dict):
                    raise ValueError("the answer is not a JSON object")
                items = page.get("value")
                if not isinstance(items, list):
                    # A collection's page always carries its items (OData's `value`, empty or
                    # not): without them, what the page held is unknown, not nothing.
                    raise ValueError(f"page {pages} of the collection has no `value` list")
                if self.stats is not None:
                    self.stats.read_page(path, len(items))
                if on_items is not None:
                    on_items(items)
                if merged is None:
                    merged = dict(page)
                    merged["value"] = list(items)
                else:
                    merged["value"].extend(items)
                if chunks is not None:
                    chunk = _items_bytes(raw)
                    chunks = None if chunk is None else [*chunks, chunk] if chunk else chunks
                late = page.get("@odata.nextLink")
                if pending is None and late:
                    pending = asyncio.ensure_future(self._get_bytes(follow(late)))
        except json.JSONDecodeError as exc:
            return Fetched(
                recorded,
                200,
                None,
                self._now(),
                f"{path} answered with malformed JSON on page {pages + 1}: {exc.msg}",
            )
        except Exception as exc:
            return self._failed(recorded, exc)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        assert merged is not None
        merged.pop("@odata.nextLink", None)
        body = None
        if chunks is not None:
            head = {k: v for k, v in merged.items() if k != "value"}
            body = json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1].encode()
            body += (b',"value":[' if head else b'"value":[') + b",".join(chunks) + b"]}"
        return Fetched(recorded, 200, merged, self._now(), body=body)

    async def batch(self, paths: Iterable[str]) -> dict[str, Fetched]:
        """Single-object GETs, twenty to a `$batch` call. Items that fail get their own error.
        An item answered 429 or 5xx inside the batch's 200 is asked again in a later batch, after
        its own Retry-After (Graph's guidance on throttling and batching)."""
        wanted = list(dict.fromkeys(paths))
        out: dict[str, Fetched] = {}
        for start in range(0, len(wanted), BATCH_SIZE):
            chunk = wanted[start : start + BATCH_SIZE]
            attempt = 0
            while chunk:
                waits = await self._batch_once(chunk, out)
                chunk = list(waits)
                if not chunk:
                    break
                known = [w for w in waits.values() if w is not None]
                retry_after = max(known) if known else None
                if self._wait_to_retry is None or not await self._wait_to_retry(
                    attempt, retry_after
                ):
                    break  # what was asked last stays as answered: an error of its own
                attempt += 1
        return out

    async def _batch_once(
        self, chunk: list[str], out: dict[str, Fetched]
    ) -> dict[str, float | None]:
        """One `$batch` call: its answers into `out`; returns the paths worth asking again
        (throttled or a server fault), with the wait each answer asked for."""
        ids = {str(uuid.uuid4()): path for path in chunk}
        payload = {"requests": [{"id": i, "method": "GET", "url": f"/{p}"} for i, p in ids.items()]}
        info = RequestInformation(Method.POST)
        info.url = f"{self.base}/$batch"
        info.set_stream_content(json.dumps(payload).encode(), "application/json")
        info.headers.try_add("Accept", "application/json")
        try:
            raw = await self.adapter.send_primitive_async(info, "bytes", _ERRORS)
            answers = loads_strict(raw or b"{}").get("responses", [])
            if not isinstance(answers, list):
                raise ValueError("the $batch answer has no list of responses")
        except json.JSONDecodeError as exc:
            for path in chunk:
                out[path] = Fetched(
                    _recorded_of(path),
                    200,
                    None,
                    self._now(),
                    f"{path} answered with malformed JSON inside $batch: {exc.msg}",
                )
            return {}
        except Exception as exc:
            for path in chunk:
                out[path] = self._failed(_recorded_of(path), exc)
            return {}
        again: dict[str, float | None] = {}
        for answer in answers:
            found = ids.get(str(answer.get("id"))) if isinstance(answer, dict) else None
            if found is None:
                continue
            path = found
            recorded = _recorded_of(path)
            status = int(answer.get("status", 0) or 0)
            body = answer.get("body")
            if isinstance(body, str):  # a non-JSON (or base64) body
                try:
                    body = loads_strict(body)
                except json.JSONDecodeError:
                    out[path] = Fetched(
                        recorded,
                        status,
                        None,
                        self._now(),
                        f"{path} answered with malformed JSON inside $batch",
                    )
                    continue
            if 200 <= status < 300:
                if isinstance(body, dict) and body.get("@odata.nextLink"):
                    # A list longer than one page: $batch does not follow the next link, and
                    # the first page alone is not the list.
                    out[path] = Fetched(
                        recorded,
                        status,
                        None,
                        self._now(),
                        f"{path} answered more than one page inside $batch",
                    )
                    continue
                out[path] = Fetched(recorded, status, body, self._now())
                continue
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            failure = ODataError()
            failure.response_status_code = status
            failure.message = f"{error.get('code')}: {error.get('message')}"
            out[path] = self._failed(recorded, failure)
            if status in RETRY_STATUSES or status in (500, 502):
                headers = answer.get("headers")
                given = (
                    next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
                    if isinstance(headers, dict)
                    else None
                )
                again[path] = retry_after_seconds(str(given) if given is not None else None)
        for path in chunk:
            out.setdefault(
                path,
                Fetched(
                    _recorded_of(path),
                    0,
                    None,
                    self._now(),
                    f"{path} got no answer inside $batch",
                ),
            )
        return again


def _recorded_of(path: str) -> str:
    return f"graph/v1.0/{path.split('?', 1)[0]}"
