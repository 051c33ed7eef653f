"""Which connector a config section enables."""

from __future__ import annotations

from connectors.attestations import AttestationsConnector
from connectors.aws.connector import AwsConnector
from connectors.base import Connector
from connectors.dns.connector import DnsConnector
from connectors.m365.connector import M365Connector
from connectors.pulumi.connector import PulumiConnector
from connectors.replay import ReplayConnector

CONNECTORS: dict[str, type[Connector]] = {
    AttestationsConnector.name: AttestationsConnector,
    M365Connector.name: M365Connector,
    DnsConnector.name: DnsConnector,
    AwsConnector.name: AwsConnector,
    PulumiConnector.name: PulumiConnector,
    ReplayConnector.name: ReplayConnector,
}

# Sections the contracts define whose connectors are not in this build yet: accepted by the
# config schema so the error can say so plainly instead of "unknown section".
PLANNED: dict[str, str] = {}
