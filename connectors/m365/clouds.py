"""Microsoft 365 national clouds: which hosts a tenant's services live on, and which resource
each token is for. Config may override any endpoint (the sandbox does); scopes stay the
cloud's own resource identifiers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str
    authority: str
    graph: str
    exchange: str
    compliance: str

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange}/.default"

    @property
    def compliance_scope(self) -> str:
        return f"{self.compliance}/.default"


CLOUDS = {
    "global": Cloud(
        "global",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://outlook.office365.com",
        "https://ps.compliance.protection.outlook.com",
    ),
    # GCC (moderate) tenants use the commercial endpoints.
    "gcc": Cloud(
        "gcc",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://outlook.office365.com",
        "https://ps.compliance.protection.outlook.com",
    ),
    "gcc-high": Cloud(
        "gcc-high",
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us",
        "https://outlook.office365.us",
        "https://ps.compliance.protection.office365.us",
    ),
    "dod": Cloud(
        "dod",
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "https://webmail.apps.mil",
        "https://l5.ps.compliance.protection.office365.us",
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
    ca_bundle: str | None = None

    @property
    def authority_overridden(self) -> bool:
        return self.authority.rstrip("/") != self.cloud.authority


def endpoints_for(cloud: str, overrides: dict[str, str] | None = None) -> Endpoints:
    base = CLOUDS[cloud]
    given = overrides or {}

    def pick(key: str, default: str) -> str:
        return given.get(key, default).rstrip("/")

    return Endpoints(
        base,
        pick("authority", base.authority),
        pick("graph", base.graph),
        pick("exchange", base.exchange),
        pick("compliance", base.compliance),
        given.get("ca_bundle") or None,
    )
