"""The Exchange Online and Security & Compliance admin API, the REST endpoint the Exchange V3
PowerShell module itself uses: `POST …/adminapi/beta/{tenant}/InvokeCommand`. Get- cmdlets
only; every `@odata.nextLink` is followed (the same body is posted to it)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from connectors.m365.fetched import Fetched
from connectors.m365.permissions import ADMIN_API_PERMISSION, READER_ROLE

# The well-known system mailbox the module anchors app-only sessions on.
_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@"
_PAGE_SIZE = 1000


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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
    ) -> None:
        self.http = http
        self.token = token
        self.kind = kind  # "exo" or "compliance": the recorded layout's folder
        self.base = base.rstrip("/")
        self.scope = scope
        self.tenant_id = tenant_id
        self._now = now
        self.region: str | None = None

    async def discover_region(self) -> None:
        """The module-file request redirects to the tenant's region; later calls go there
        directly instead of through the front door. Failing to discover is not an error."""
        url = f"{self.base}/AdminApi/v1.0/{self.tenant_id}/EXOModuleFile"
        try:
            response = await self.http.get(
                url, headers={"Authorization": f"Bearer {await self.token(self.scope)}"}
            )
        except httpx.HTTPError:
            return
        location = response.headers.get("Location")
        if response.is_redirect and location:
            self.region = _origin(urllib.parse.urljoin(url, location))

    def _headers(self, token: str, cmdlet: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "X-AnchorMailbox": f"{_ANCHOR}{self.tenant_id}",
            "X-ResponseFormat": "json",
            "X-CmdletName": cmdlet,
            "Prefer": f"odata.maxpagesize={_PAGE_SIZE}",
            "client-request-id": str(uuid.uuid4()),
            "Content-Type": "application/json",
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
        url: str | None = self.endpoint(select)
        items: list[Any] = []
        redirects = 0
        try:
            while url:
                response = await self.http.post(
                    url, content=body, headers=self._headers(await self.token(self.scope), cmdlet)
                )
                if response.is_redirect and redirects < 3:
                    redirects += 1
                    url = _regional(urllib.parse.urljoin(url, response.headers.get("Location", "")))
                    continue
                if response.status_code != 200:
                    return self._failure(recorded, response.status_code, _error_text(response))
                page = response.json()
                items.extend(page.get("value", []))
                url = page.get("@odata.nextLink")
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
        return Fetched(recorded, 200, items, self._now())


def _regional(url: str) -> str:
    """Security & Compliance redirects to `<region>.admin.protection.outlook.com:446`; the REST
    API of that region is served from `<region>.ps.compliance.protection.outlook.com`."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ".admin.protection." in host:
        host = host.replace(".admin.protection.", ".ps.compliance.protection.")
        return parts._replace(netloc=host).geturl()
    return url


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return response.reason_phrase or "error"
