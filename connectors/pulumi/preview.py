"""A `pulumi preview`'s resources, as CrossGuard hands them to a policy pack, read into a
snapshot by the same normaliser as the Pulumi connector (`report_stack`)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any, Protocol

from auditor.model.snapshot import Snapshot
from connectors.base import CollectContext
from connectors.pulumi.connector import report_stack
from connectors.pulumi.normalise import TYPES, DeclaredResource
from connectors.pulumi.sources import StackState


class PreviewResource(Protocol):
    """What pulumi_policy's PolicyResource offers that is read here."""

    resource_type: str
    props: Any
    urn: str
    name: str
    provider: Any


def _region(resource: PreviewResource, default: str) -> str:
    own = (resource.props or {}).get("region")
    provider = getattr(resource, "provider", None)
    from_provider = (getattr(provider, "props", None) or {}).get("region")
    for candidate in (own, from_provider):
        if isinstance(candidate, str) and candidate:
            return candidate
    return default


def declared_from_preview(
    resources: Iterable[PreviewResource], default_region: str
) -> list[DeclaredResource]:
    return [
        DeclaredResource(
            type=r.resource_type,
            name=r.name,
            inputs=dict(r.props or {}),
            region=_region(r, default_region),
            urn=r.urn,
        )
        for r in resources
        if r.resource_type in TYPES
    ]


def preview_snapshot(
    resources: Iterable[PreviewResource], stack: str, now: dt.datetime, default_region: str
) -> Snapshot:
    """The snapshot the Pulumi connector would make of a stack declaring `resources`."""
    declared = declared_from_preview(resources, default_region)
    ctx = CollectContext(connector="pulumi", now=now, deadline=math.inf)
    report_stack(ctx, StackState(stack, "preview", declared, evidence={}))
    snapshot = Snapshot(collected_at=now)
    for platform, kind, subject in ctx.subjects:
        snapshot.add_subject(platform, kind, subject)
    snapshot.sections.extend(ctx.sections)
    return snapshot
