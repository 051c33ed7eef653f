"""Microsoft 365 national clouds: which hosts a tenant's services live on, and which resource each
token is for. Config may override any endpoint (the sandbox does); scopes stay the cloud's own
resource identifiers, so a token for one cloud is never asked for while talking to another.

Sources, row by row (Microsoft publishes the PowerShell connection URIs and the Graph and sign-in
hosts; the admin REST API's hosts and token resources are what working REST clients use):
- authority: Entra docs, identity-platform/authentication-national-cloud.md, "Microsoft Entra
  authentication endpoints" (login.microsoftonline.com; login.microsoftonline.us for GCC High
  and DoD).
- graph: Graph docs, concepts/deployments.md, "Microsoft Graph and Graph Explorer service root
  endpoints" (GCC keeps graph.microsoft.com; GCC High graph.microsoft.us; DoD
  dod-graph.microsoft.us).
- exchange: Exchange docs, Connect-ExchangeOnline.md, -ConnectionUri (outlook.office365.com;
  GCC High outlook.office365.us; DoD webmail.apps.mil for remote PowerShell). For the REST API
  in DoD, the host and token resource are outlook-dod.office365.us: cisagov/ScubaGear
  EXORestHelper.psm1 (its $Scope and front-door tables) and Microsoft's CSS-Exchange scripts;
  the DoD endpoint list (office-365-u.s.-government-dod-endpoints.md, Exchange Online ID 1)
  names both hosts.
- compliance: Exchange docs, connect-to-scc-powershell.md (ps.compliance.protection.outlook.com;
  GCC High ps.compliance.protection.office365.us). For DoD the docs give remote-PowerShell URIs
  that disagree with each other (l5.ps.compliance.protection.office365.us there,
  compliance.dod.microsoft.com in app-only-auth-powershell-v2.md); the REST front door and token
  resource used by ScubaGear's REST client are ps.compliance.protection.office365.us.
- sharepoint: the domain of the tenant's SharePoint admin site, `<name>-admin.<domain>`, whose
  origin is also the token resource (cisagov/ScubaGear schemas/ScubaGearApiCatalog.json, "SharePoint
  REST API": sharepoint.com for commercial and GCC, sharepoint.us for GCC High,
  sharepoint-mil.us for DoD; Connect-SPOService.md shows https://contoso-admin.sharepoint.com).
- compliance_backend: the regional Security & Compliance host a front-door redirect names, built
  from the first label of the redirect's host (ScubaGear Get-ComplianceApiEndpoint, CIPP-API
  New-ExoRequest; Get-ConnectionInformation.md shows nam12b.ps.compliance.protection.outlook.com).
- teams: the Teams admin REST API the MicrosoftTeams module's Cs cmdlets call
  (`/Skype.Policy/configurations/...`): api.interfaces.records.teams.microsoft.com for commercial
  and GCC, api.interfaces.records.gov.teams.microsoft.us for GCC High and DoD (cisagov/ScubaGear's
  REST helpers and their endpoint tests; one other public client names a separate DoD host,
  api.interfaces.records.dod.teams.microsoft.us: the endpoint is overridable for that reason).
  The token is for the "Skype and Teams Tenant Admin API" application,
  48ac35b8-9aa8-4d74-927d-1f4a14a0b239, in every cloud (Microsoft's "Application-based
  authentication in Teams PowerShell Module" asks for that resource's token; ScubaGear and
  CIPP-API request `48ac35b8-…/.default`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

# The "Skype and Teams Tenant Admin API" application: the Teams admin API's token resource.
TEAMS_RESOURCE = "48ac35b8-9aa8-4d74-927d-1f4a14a0b239"
# One DNS label: a tenant's SharePoint name.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Cloud:
    name: str
    authority: str
    graph: str
    exchange: str
    compliance: str
    # "{prefix}" is the first label of the host a compliance front-door redirect names.
    compliance_backend: str
    teams: str
    # The SharePoint admin site is `https://<name>-admin.<sharepoint>` (see sharepoint_admin).
    sharepoint: str = "sharepoint.com"
    # Token resources where they differ from the host requests go to.
    exchange_resource: str = ""
    compliance_resource: str = ""

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange_resource or self.exchange}/.default"

    @property
    def compliance_scope(self) -> str:
        return f"{self.compliance_resource or self.compliance}/.default"

    @property
    def teams_scope(self) -> str:
        return f"{TEAMS_RESOURCE}/.default"

    def sharepoint_admin(self, initial_domain: str) -> str | None:
        """The admin site of the tenant whose initial domain is `<name>.onmicrosoft.com`
        (`https://<name>-admin.sharepoint.com`), as ScubaGear finds it; None for any other
        domain, or a name that is not one DNS label."""
        name, dot, rest = initial_domain.strip().lower().partition(".")
        if (
            not dot
            or rest not in ("onmicrosoft.com", "onmicrosoft.us")
            or not _LABEL.fullmatch(name)
        ):
            return None
        return f"https://{name}-admin.{self.sharepoint}"

    def is_sharepoint_admin(self, origin: str) -> bool:
        """Whether `origin` is a SharePoint admin site of this cloud (a real token resource),
        not a proxy or the sandbox."""
        host = urllib.parse.urlsplit(origin).hostname or ""
        name, _, domain = host.partition(".")
        return (
            domain == self.sharepoint and name.endswith("-admin") and bool(_LABEL.fullmatch(name))
        )


_COMMERCIAL = {
    "authority": "https://login.microsoftonline.com",
    "graph": "https://graph.microsoft.com",
    "exchange": "https://outlook.office365.com",
    "compliance": "https://ps.compliance.protection.outlook.com",
    "compliance_backend": "https://{prefix}.ps.compliance.protection.outlook.com",
    "teams": "https://api.interfaces.records.teams.microsoft.com",
}
CLOUDS = {
    "global": Cloud("global", **_COMMERCIAL),
    # GCC (moderate) tenants use the commercial endpoints (deployments.md; connect docs).
    "gcc": Cloud("gcc", **_COMMERCIAL),
    "gcc-high": Cloud(
        "gcc-high",
        authority="https://login.microsoftonline.us",
        graph="https://graph.microsoft.us",
        exchange="https://outlook.office365.us",
        compliance="https://ps.compliance.protection.office365.us",
        compliance_backend="https://{prefix}.ps.compliance.protection.office365.us",
        teams="https://api.interfaces.records.gov.teams.microsoft.us",
        sharepoint="sharepoint.us",
    ),
    "dod": Cloud(
        "dod",
        authority="https://login.microsoftonline.us",
        graph="https://dod-graph.microsoft.us",
        exchange="https://outlook-dod.office365.us",
        compliance="https://ps.compliance.protection.office365.us",
        compliance_backend="https://{prefix}.ps.compliance.protection.office365.us",
        teams="https://api.interfaces.records.gov.teams.microsoft.us",
        sharepoint="sharepoint-mil.us",
    ),
}


@dataclass(frozen=True)
class Endpoints:
    """Where requests go (possibly overridden) and which cloud's scopes the tokens ask for."""

    cloud: Cloud
    authority: str
    graph: str
    exchange: str
    compliance: str
    compliance_backend: str
    teams: str
    ca_bundle: str | None = None
    # The SharePoint admin site when config names it; else it is worked out from the tenant's
    # initial domain (Cloud.sharepoint_admin) once Graph has said what that is.
    sharepoint_admin: str | None = None

    @property
    def authority_overridden(self) -> bool:
        return self.authority.rstrip("/") != self.cloud.authority


def endpoints_for(cloud: str, overrides: dict[str, str] | None = None) -> Endpoints:
    base = CLOUDS[cloud]
    given = overrides or {}

    def pick(key: str, default: str) -> str:
        return given.get(key, default).rstrip("/")

    compliance = pick("compliance", base.compliance)
    # An overridden front door (a proxy, the sandbox) has no regional hosts of the cloud's
    # pattern: it names its own, or stays where it is.
    backend_default = base.compliance_backend if compliance == base.compliance else compliance
    return Endpoints(
        base,
        pick("authority", base.authority),
        pick("graph", base.graph),
        pick("exchange", base.exchange),
        compliance,
        pick("compliance_backend", backend_default),
        pick("teams", base.teams),
        given.get("ca_bundle") or None,
        given["sharepoint_admin"].rstrip("/") if given.get("sharepoint_admin") else None,
    )
