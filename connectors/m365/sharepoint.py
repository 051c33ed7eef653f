"""The SharePoint admin site's tenant settings: `GET https://<name>-admin.sharepoint.com/_api/SPO.Tenant`.

Graph's sharepointSettings (v1.0 and beta) has no OneDrive sharing level, default sharing link,
"Anyone" link expiry or permissions, or verification-code reauthentication; the SharePoint
admin API's Tenant object has them all. ScubaGear reads it this way (its SPORestHelper.psm1
`Get-SPOTenantRest`: a GET with `Accept: application/json;odata=verbose`, whose answer wraps the
Tenant's properties in `d`), so no CSOM ProcessQuery POST is needed: the read is a GET, and the
HTTP layer refuses anything else before it leaves the machine.

What it takes (ScubaGear's schemas/ScubaGearApiCatalog.json, "SharePoint REST API"): a token
whose resource is the admin site's origin, for an app holding the SharePoint application
permission Sites.FullControl.All, signed in with a certificate (SharePoint refuses app-only tokens
got with a client secret: "Unsupported app only token"). That permission also lets the app read
and change every site's content, so this read is opt-in (`[m365] read_sharepoint_admin = true`);
left off, its section is `error` and says what to grant.

The admin site is found from the tenant's initial domain (`<name>.onmicrosoft.com` ->
`https://<name>-admin.sharepoint.com`, as ScubaGear finds it) unless config names it
(`[m365.endpoints] sharepoint_admin`). The token goes to that one origin and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from auditor.jsonutil import loads_strict
from auditor.model.errors import CollectionError
from connectors.m365.clouds import Cloud
from connectors.m365.fetched import Fetched
from connectors.m365.http import RefusedRequest
from connectors.m365.permissions import (
    SHAREPOINT_API,
    SHAREPOINT_OPT_IN,
    SHAREPOINT_PERMISSION,
)

TENANT_PATH = "sharepoint/SPO.Tenant"
TENANT_ENDPOINT = "/_api/SPO.Tenant"
# The verbose OData form ScubaGear asks for: the Tenant's properties in `d`, enums as numbers.
ACCEPT = "application/json;odata=verbose"
OPT_IN = SHAREPOINT_OPT_IN

_GRANT = (
    f"grant the app the {SHAREPOINT_API} application permission {SHAREPOINT_PERMISSION} "
    "(`commsaudit permissions` shows how) and sign in with a certificate"
)
NOT_ENABLED = (
    "the SharePoint admin API was not read: it is opt-in, because app-only access to the "
    f"tenant's SharePoint settings needs the {SHAREPOINT_API} application permission "
    f"{SHAREPOINT_PERMISSION}, which also lets the app read and change every site. To judge "
    f"these settings, {_GRANT}, then set [m365] {OPT_IN} = true"
)


class SharePointAdmin:
    """Reads the Tenant object once. Every failure is a `Fetched` with the reason (its section
    is then `error`), never an exception: SharePoint costs its own controls, not the run."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: Callable[[str], Awaitable[str]],
        *,
        cloud: Cloud,
        override: str | None,
        enabled: bool,
        method: str,
        now: Callable[[], dt.datetime],
        initial_domain: Callable[[], Awaitable[str | None]],
        allow: Callable[[str], None],
    ) -> None:
        self.http = http
        self.token = token
        self.cloud = cloud
        self.override = override.rstrip("/") if override else None
        self.enabled = enabled
        self.method = method
        self._now = now
        self._initial_domain = initial_domain
        self._allow = allow
        self.origin: str | None = None  # where the read went, once known

    def _failed(self, status: int, reason: str) -> Fetched:
        return Fetched(TENANT_PATH, status, None, self._now(), reason)

    async def _where(self) -> tuple[str, str] | str:
        """(the admin site's origin, the token resource), or why they cannot be worked out."""
        domain = await self._initial_domain()
        derived = self.cloud.sharepoint_admin(domain) if domain else None
        origin = self.override or derived
        # A real admin site named in config is its own resource; a proxy or the sandbox in
        # front of it is not, and the token is still for the tenant's own admin site.
        resource = (
            self.override
            if self.override and self.cloud.is_sharepoint_admin(self.override)
            else derived
        )
        if origin is None or resource is None:
            return (
                "the SharePoint admin site could not be worked out: the tenant's initial "
                f"domain ({domain or 'not read'}) is not <name>.onmicrosoft.com. Set "
                f'[m365.endpoints] sharepoint_admin = "https://<name>-admin.{self.cloud.sharepoint}"'
            )
        return origin, resource

    def endpoint(self) -> str:
        return f"{self.origin}{TENANT_ENDPOINT}" if self.origin else TENANT_ENDPOINT

    async def read_tenant(self) -> Fetched:
        if not self.enabled:
            return self._failed(0, NOT_ENABLED)
        # A federated credential signs in with a client assertion, as a certificate does: PnP
        # Framework reports SharePoint app-only access tested that way (pnp/pnpframework#1124).
        if self.method == "client-secret":
            return self._failed(
                0,
                "the SharePoint admin API was not read: SharePoint refuses app-only tokens got "
                'with a client secret ("Unsupported app only token"); sign in with a '
                'certificate (auth = "certificate") or a federated credential',
            )
        where = await self._where()
        if isinstance(where, str):
            return self._failed(0, where)
        self.origin, resource = where
        try:
            self._allow(self.origin)
        except ValueError as exc:
            return self._failed(0, f"[m365.endpoints] sharepoint_admin: {exc}")
        try:
            token = await self.token(f"{resource}/.default")
        except CollectionError as exc:
            # A sign-in for SharePoint alone that fails (no such admin site in the tenant, say)
            # costs SharePoint's controls, not the run.
            return self._failed(0, f"{TENANT_PATH}: {exc}")
        headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
        try:
            response = await self.http.get(self.endpoint(), headers=headers)
        except httpx.HTTPError as exc:
            return self._failure(0, f"{type(exc).__name__}: {exc}")
        except RefusedRequest as exc:
            return self._failed(0, f"{TENANT_PATH} was not read: {exc}")
        if response.is_redirect:
            target = response.headers.get("Location", "")
            host = urllib.parse.urlsplit(urllib.parse.urljoin(self.endpoint(), target)).netloc
            return self._failure(
                response.status_code,
                f"redirected to {host or 'nowhere'}; a token is never sent after a redirect",
            )
        if response.status_code != 200:
            return self._failure(response.status_code, _error_text(response))
        try:
            data = loads_strict(response.content)
        except (json.JSONDecodeError, ValueError) as exc:
            return self._failed(200, f"{TENANT_PATH} answered with malformed JSON: {exc}")
        if not isinstance(data, dict):
            return self._failed(200, f"{TENANT_PATH} answered JSON that is not an object")
        return Fetched(TENANT_PATH, 200, data, self._now(), body=response.content)

    def _failure(self, status: int, text: str) -> Fetched:
        reason = f"{TENANT_PATH} answered {status or 'no response'}: {text}"
        if status in (401, 403):
            reason += f" ({_GRANT}; a client secret is refused)"
        return self._failed(status, reason)


def _error_text(response: httpx.Response) -> str:
    """SharePoint's two error shapes: OData's `{"error": {"code", "message": {"value"}}}` and
    the token check's `{"error_description": "..."}`. At most 300 characters of either."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    if isinstance(body, dict):
        error = body.get("error") or body.get("odata.error")
        if isinstance(error, dict):
            message = error.get("message")
            text = message.get("value") if isinstance(message, dict) else message
            return f"{error.get('code')}: {text}"[:300]
        description = body.get("error_description")
        if isinstance(description, str):
            return description[:300]
    return response.reason_phrase or "error"
