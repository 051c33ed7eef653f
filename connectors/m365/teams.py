"""The Teams admin REST API, the one the MicrosoftTeams module's Cs cmdlets call:
`GET {endpoint}/Skype.Policy/configurations/<Type>` answers every policy of that type (the Global
one and each custom one) as a JSON array, the objects the cmdlet returns (cisagov/ScubaGear's REST
helpers and the public clients named in clouds.py read the same paths).

GETs only: this client has no other verb, and the transport refuses any other request anyway.
The token is for the Teams admin API's own resource and goes to the configured Teams endpoint and
nowhere else (a redirect is not followed; the transport's destinations say where requests may go).
Answers are bounded by the transport's caps; retries and throttling are the transport's too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from auditor.jsonutil import loads_strict
from connectors.m365.fetched import Fetched
from connectors.m365.http import RefusedRequest, Stats
from connectors.m365.permissions import READER_ROLE, TEAMS_API

# Recorded path -> the cmdlet the module answers it with (for messages and the evidence).
CONFIGURATIONS = {
    "Skype.Policy/configurations/TeamsMeetingPolicy": "Get-CsTeamsMeetingPolicy",
    "Skype.Policy/configurations/TenantFederationSettings": "Get-CsTenantFederationConfiguration",
    "Skype.Policy/configurations/TeamsClientConfiguration": "Get-CsTeamsClientConfiguration",
    "Skype.Policy/configurations/TeamsAppPermissionPolicy": "Get-CsTeamsAppPermissionPolicy",
    "Skype.Policy/configurations/TeamsMeetingBroadcastPolicy": (
        "Get-CsTeamsMeetingBroadcastPolicy"
    ),
}


class TeamsApi:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: Callable[[str], Awaitable[str]],
        *,
        base: str,
        scope: str,
        now: Callable[[], dt.datetime],
        stats: Stats | None = None,
    ) -> None:
        self.http = http
        self.token = token
        self.base = base.rstrip("/")
        self.scope = scope
        self._now = now
        self.stats = stats

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def _failure(self, recorded: str, status: int, text: str) -> Fetched:
        reason = f"{recorded} answered {status or 'no response'}: {text}"
        if status in (401, 403):
            reason += (
                f" (the app's service principal needs the {READER_ROLE} role, which lets it "
                f"read Teams settings through the {TEAMS_API}; a role assigned in the last "
                "hour may not have reached Teams yet)"
            )
        return Fetched(recorded, status, None, self._now(), reason)

    async def get(self, path: str) -> Fetched:
        """One configuration type: every policy of it, as a list of objects."""
        recorded = f"teams/{path}"
        try:
            headers = {
                "Authorization": f"Bearer {await self.token(self.scope)}",
                "Accept": "application/json",
            }
            response = await self.http.get(self.url(path), headers=headers)
            if response.is_redirect:
                await response.aclose()
                return self._failure(
                    recorded,
                    response.status_code,
                    "redirected; a token is never sent after a redirect",
                )
            if response.status_code != 200:
                return self._failure(recorded, response.status_code, _error_text(response))
            body = loads_strict(response.content)  # NaN or Infinity: malformed
        except json.JSONDecodeError as exc:
            return Fetched(
                recorded, 200, None, self._now(), f"{recorded} answered malformed JSON: {exc.msg}"
            )
        except httpx.HTTPError as exc:
            return self._failure(recorded, 0, f"{type(exc).__name__}: {exc}")
        except RefusedRequest as exc:
            return Fetched(recorded, 0, None, self._now(), f"{recorded} was not read: {exc}")
        if isinstance(body, dict) and body.get("@odata.nextLink"):
            # The configuration API answers in one piece; a paged answer would be read in part,
            # and a policy left unread could be the one that fails.
            return Fetched(
                recorded, 200, None, self._now(), f"{recorded} answered in pages, not in one piece"
            )
        if self.stats is not None:
            self.stats.read_page(CONFIGURATIONS.get(path, path), _count(body))
        return Fetched(recorded, 200, body, self._now(), body=response.content)


def _count(body: Any) -> int:
    if isinstance(body, list):
        return len(body)
    return 1 if isinstance(body, dict) else 0


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    if isinstance(data, dict) and data.get("message"):
        return str(data.get("message"))[:300]
    return response.reason_phrase or "error"
