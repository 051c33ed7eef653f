"""Which connector a config section enables. Each connector's module (and its SDK: boto3,
msgraph, pulumi) is imported when a run first needs that connector, not before: a run that
audits one Microsoft 365 tenant does not pay for importing AWS's and Pulumi's SDKs."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping

from auditor.model.snapshot import Snapshot
from connectors.base import Connector

# Section name -> (module, class).
_WHERE = {
    "attestations": ("connectors.attestations", "AttestationsConnector"),
    "m365": ("connectors.m365.connector", "M365Connector"),
    "dns": ("connectors.dns.connector", "DnsConnector"),
    "aws": ("connectors.aws.connector", "AwsConnector"),
    "pulumi": ("connectors.pulumi.connector", "PulumiConnector"),
    "replay": ("connectors.replay", "ReplayConnector"),
}


class _Connectors(Mapping[str, type[Connector]]):
    """Section name -> connector class; iterating gives the names without importing."""

    def __getitem__(self, name: str) -> type[Connector]:
        module, attribute = _WHERE[name]
        found: type[Connector] = getattr(importlib.import_module(module), attribute)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


CONNECTORS: Mapping[str, type[Connector]] = _Connectors()

# Sections the contracts define whose connectors are not in this build yet: accepted by the
# config schema so the error can say so plainly instead of "unknown section".
PLANNED: dict[str, str] = {}

# Sections a connector's package works out from the whole snapshot once collection is over (the
# Pulumi stack's drift from the account it deploys to): (module, function), run by `derive`.
_DERIVATIONS = (("connectors.pulumi.drift", "derive_drift"),)


def derivations() -> list[Callable[[Snapshot], None]]:
    return [getattr(importlib.import_module(m), f) for m, f in _DERIVATIONS]
