"""Which connector a config section enables. Each connector's module (and its SDK: boto3,
msgraph, pulumi) is imported when a run first needs that connector, not before: a run that
audits one Microsoft 365 tenant does not pay for importing AWS's and Pulumi's SDKs."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from importlib import resources

from auditor.model.catalogue import Catalogue
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


# Where each package declares the sections it emits (the Pulumi connector emits the aws.*
# sections too, from a stack's declared resources: they are declared once, by the AWS package).
_SECTION_FILES = (
    ("connectors.m365", "sections.json"),
    ("connectors.aws", "sections.json"),
    ("connectors.dns", "sections.json"),
    ("connectors.pulumi", "sections.json"),
    ("connectors.attestations", "sections.json"),
    ("auditor", "derived_sections.json"),  # the vendor agreements and providers derive makes
)


def catalogue() -> Catalogue:
    """Every section a connector or a derivation emits, with the schema of its data."""
    documents = []
    for package, name in _SECTION_FILES:
        text = resources.files(package).joinpath(name).read_text("utf-8")
        documents.append((f"{package.replace('.', '/')}/{name}", json.loads(text)))
    return Catalogue.from_documents(documents)
