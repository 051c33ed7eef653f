"""The Exchange Online and Security & Compliance admin API, the REST endpoint the Exchange V3
PowerShell module itself uses: `POST …/adminapi/beta/{tenant}/InvokeCommand`. Get- cmdlets
only; every `@odata.nextLink` is followed (the same body is posted to it).

What public REST clients that work today do, and this client does too (sources in clouds.py and
the README's Microsoft 365 section):
- Exchange Online: POST straight to the cloud's host, anchored on the system mailbox by tenant id
  (`APP:SystemMailbox{bb558c35-…}@<tenant id>`, as CIPP-API's New-ExoRequest sends).
- Security & Compliance: first GET the module-file endpoint of the front door with redirects off;
  its redirect names the tenant's region (`<prefix>.admin.protection.outlook.com:446`), whose REST
  API is served from `<prefix>.ps.compliance.protection.outlook.com` on 443. POST there, anchored
  by user principal name on the tenant's initial domain
  (`UPN:SystemMailbox{bb558c35-…}@<tenant>.onmicrosoft.com`, CIPP-API's "compliance center
  anchor" fix). A POST that is redirected is not followed with the token: the region is
  discovered again, once.
The service also answers without an anchor (ScubaGear posts none), so an anchor that cannot be
worked out is left out rather than guessed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from auditor.jsonutil import loads_strict
from connectors.m365.fetched import Fetched, compact_json
from connectors.m365.http import PageLinks, RefusedRequest, Stats
from connectors.m365.permissions import ADMIN_API_PERMISSION, READER_ROLE

SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
_PAGE_SIZE = 1000
# The first label of a regional host: nam12b, eur02b, gcc02b …
_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

Anchor = Callable[[], Awaitable[str | None]]


async def _no_anchor() -> str | None:
    return None


def regional_endpoint(template: str, location: str, base: str) -> str | None:
    """The regional REST endpoint a front-door redirect names: the first label of the redirect's
    host put into `template` (its port, 446, is the admin endpoint's, not the REST API's). None
    when the redirect names no usable host. A template without `{prefix}` is used as it is."""
    host = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", location)).hostname or ""
    if not host or host == urllib.parse.urlsplit(base).hostname or _is_address(host):
        return None  # a redirect to the front door itself, or to an address, names no region
    prefix = host.split(".", 1)[0].lower()
    if not _PREFIX.fullmatch(prefix):
        return None
    return template.replace("{prefix}", prefix).rstrip("/")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AdminApi:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: Callable[[str], Awaitable[str]],
        *,
        kind: str,
        base: str,
        scope: str,
        tenant_id: str,
        now: Callable[[], dt.datetime],
        anchor: Anchor = _no_anchor,
        backend: str | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.http = http
        self.stats = stats  # pages and items read, for progress lines
        self.token = token
        self.kind = kind  # "exo" or "compliance": the recorded layout's folder
        self.base = base.rstrip("/")
        self.scope = scope
        self.tenant_id = tenant_id
        self._now = now
        self._anchor = anchor
        # Where a front-door redirect sends this API: a template with "{prefix}", or None for
        # an API that is not discovered (Exchange Online).
        self.backend = backend
        self.region: str | None = None
        self.discovery: dict[str, Any] = {}

    async def _headers(self, cmdlet: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {await self.token(self.scope)}"}
        anchor = await self._anchor()
        if anchor:
            headers["X-AnchorMailbox"] = anchor
        if cmdlet is not None:
            headers |= {
                "X-ResponseFormat": "json",
                "X-CmdletName": cmdlet,
                "Prefer": f"odata.maxpagesize={_PAGE_SIZE}",
                "client-request-id": str(uuid.uuid4()),
                "Content-Type": "application/json",
            }
        return headers

    async def discover_region(self) -> None:
        """Ask the front door which region serves the tenant (GET, redirects off). Without an
        answer the front door itself is used: failing to discover is not an error."""
        if self.backend is None:
            return
        url = f"{self.base}/AdminApi/v1.0/{self.tenant_id}/EXOModuleFile"
        self.region = None
        try:
            response = await self.http.get(url, headers=await self._headers())
            await response.aclose()
        except (httpx.HTTPError, RefusedRequest) as exc:
            self.discovery = {"url": url, "error": f"{type(exc).__name__}: {exc}"}
            return
        location = response.headers.get("Location")
        self.discovery = {"url": url, "status": response.status_code}
        if response.is_redirect and location:
            self.region = regional_endpoint(self.backend, location, self.base)
            self.discovery |= {
                "redirect_host": urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).netloc,
                "endpoint": self.region,
            }

    def _failure(self, recorded: str, status: int, text: str) -> Fetched:
        reason = f"{recorded} answered {status or 'no response'}: {text}"
        if status in (401, 403):
            reason += (
                f" (the app needs the {ADMIN_API_PERMISSION} application permission and the "
                f"{READER_ROLE} role, or a role group that can run this cmdlet)"
            )
        return Fetched(recorded, status, None, self._now(), reason)

    def endpoint(self, select: Sequence[str] = ()) -> str:
        url = f"{self.region or self.base}/adminapi/beta/{self.tenant_id}/InvokeCommand"
        return f"{url}?$select={','.join(select)}" if select else url

    async def invoke(
        self, cmdlet: str, parameters: dict[str, Any] | None = None, select: Sequence[str] = ()
    ) -> Fetched:
        """Run a Get- cmdlet and read every page. `select` names the properties to return
        (`$select`, as the module's REST cmdlets ask); all of them when empty."""
        recorded = f"{self.kind}/{cmdlet}"
        body = json.dumps({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}})
        pages = PageLinks()
        url: str | None = pages(self.endpoint(select))
        items: list[Any] = []
        chunks: list[bytes] = []
        rediscovered = False
        try:
            while url:
                response = await self.http.post(
                    url, content=body, headers=await self._headers(cmdlet)
                )
                if response.is_redirect:
                    await response.aclose()
                    target = response.headers.get("Location", "")
                    if self.backend is not None and not rediscovered and not items:
                        # The region moved: ask the front door again, then start over there.
                        rediscovered = True
                        await self.discover_region()
                        pages = PageLinks()  # starting over, somewhere else
                        url = pages(self.endpoint(select))
                        continue
                    host = urllib.parse.urlsplit(urllib.parse.urljoin(url, target)).netloc
                    return self._failure(
                        recorded,
                        response.status_code,
                        f"redirected to {host or 'nowhere'}; a token is never sent after a "
                        "redirect",
                    )
                if response.status_code != 200:
                    return self._failure(recorded, response.status_code, _error_text(response))
                page = loads_strict(response.content)  # NaN or Infinity: malformed
                # Every page carries its items (`value`, empty or not): a page without them
                # held something unknown, not nothing.
                if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                    return Fetched(
                        recorded,
                        200,
                        None,
                        self._now(),
                        f"{recorded} answered JSON that is not a page of objects",
                    )
                values = page["value"]
                items.extend(values)
                if self.stats is not None:
                    self.stats.read_page(cmdlet, len(values))
                if values:
                    # Each page's evidence is encoded as it arrives, in the wait for the next:
                    # 50,000 mailboxes encoded at once hold the event loop for a third of a
                    # second, and every other read with it.
                    chunks.append(compact_json(values)[1:-1])
                next_link = page.get("@odata.nextLink")
                if not isinstance(next_link, str) or not next_link:
                    break
                if _origin(next_link) != _origin(url):
                    return self._failure(
                        recorded,
                        200,
                        f"its next page is on another host ({_origin(next_link)}); the token "
                        "goes only to the host that was asked",
                    )
                url = pages(next_link)
        except json.JSONDecodeError as exc:
            return Fetched(
                recorded,
                200,
                None,
                self._now(),
                f"{recorded} answered with malformed JSON: {exc.msg}",
            )
        except httpx.HTTPError as exc:
            return self._failure(recorded, 0, f"{type(exc).__name__}: {exc}")
        except RefusedRequest as exc:
            # A spent budget, a loop, a bomb: this cmdlet's sections, not the run.
            return Fetched(
                recorded, 0, None, self._now(), f"{recorded} was not read in full: {exc}"
            )
        return Fetched(recorded, 200, items, self._now(), body=b"[" + b",".join(chunks) + b"]")


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return response.reason_phrase or "error"
