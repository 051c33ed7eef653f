"""Amazon SES (v2 API) in one region: configuration sets with their delivery options and event
destinations, and email identities with DKIM and their default configuration set, normalised
into the sections the `aws.ses.*` policies read (and that a Pulumi stack fills the same way)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from connectors.aws.calls import AwsReader, Read

SERVICE = "sesv2"


@dataclass
class SesRegion:
    configuration_sets: list[dict[str, Any]] | None = None
    event_destinations: list[dict[str, Any]] | None = None
    identities: list[dict[str, Any]] | None = None
    raw: list[str] = field(default_factory=list)
    # The first failed read behind each section, as the reason it is `error`.
    sets_error: str | None = None
    destinations_error: str | None = None
    identities_error: str | None = None

    @property
    def in_use(self) -> bool:
        return bool(self.configuration_sets or self.identities)


def _configuration_set(detail: dict[str, Any]) -> dict[str, Any]:
    delivery = detail.get("DeliveryOptions") or {}
    sending = detail.get("SendingOptions") or {}
    return {
        "name": detail.get("ConfigurationSetName"),
        # SES applies OPTIONAL when a configuration set says nothing.
        "tls_policy": delivery.get("TlsPolicy") or "OPTIONAL",
        "sending_enabled": sending.get("SendingEnabled", True),
    }


def _destinations(name: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "event_destinations": [
            {
                "name": d.get("Name"),
                "enabled": bool(d.get("Enabled", False)),
                "events": sorted(d.get("MatchingEventTypes") or []),
            }
            for d in answer.get("EventDestinations", [])
        ],
    }


def _identity(
    summary: dict[str, Any], detail: dict[str, Any], tls: dict[str, str]
) -> dict[str, Any]:
    dkim = detail.get("DkimAttributes") or {}
    default_set = detail.get("ConfigurationSetName")
    return {
        "identity": summary.get("IdentityName"),
        "type": summary.get("IdentityType"),
        "verified_for_sending": bool(
            detail["VerifiedForSendingStatus"]
            if "VerifiedForSendingStatus" in detail
            else summary.get("VerificationStatus") == "SUCCESS"
        ),
        "sending_enabled": bool(summary.get("SendingEnabled", False)),
        "configuration_set": default_set,
        # The default configuration set's TLS policy, joined here so one item says it all.
        "configuration_set_tls_policy": tls.get(default_set) if default_set else None,
        "dkim": {
            "signing_enabled": bool(dkim.get("SigningEnabled", False)),
            "status": dkim.get("Status"),
            "origin": dkim.get("SigningAttributesOrigin"),
            "tokens": list(dkim.get("Tokens") or []),
        },
    }


async def collect_region(reader: AwsReader, region: str) -> SesRegion:
    result = SesRegion()
    listed = await reader.read(SERVICE, region, "list_configuration_sets")
    _keep(result, listed)
    if listed.ok and listed.data is not None:
        names = list(listed.data.get("ConfigurationSets", []))
        details = await asyncio.gather(
            *(
                reader.read(SERVICE, region, "get_configuration_set", key=n, ConfigurationSetName=n)
                for n in names
            )
        )
        destinations = await asyncio.gather(
            *(
                reader.read(
                    SERVICE,
                    region,
                    "get_configuration_set_event_destinations",
                    key=n,
                    ConfigurationSetName=n,
                )
                for n in names
            )
        )
        for read in (*details, *destinations):
            _keep(result, read)
        failed = next((d for d in details if not d.ok), None)
        if failed is not None:
            result.sets_error = failed.error
        else:
            result.configuration_sets = [_configuration_set(d.data or {}) for d in details]
        failed = next((d for d in destinations if not d.ok), None)
        if failed is not None:
            result.destinations_error = failed.error
        else:
            result.event_destinations = [
                _destinations(n, d.data or {}) for n, d in zip(names, destinations, strict=True)
            ]
    else:
        result.sets_error = result.destinations_error = listed.error

    tls = {s["name"]: s["tls_policy"] for s in result.configuration_sets or []}
    identities = await reader.read(SERVICE, region, "list_email_identities")
    _keep(result, identities)
    if not identities.ok or identities.data is None:
        result.identities_error = identities.error
        return result
    summaries = list(identities.data.get("EmailIdentities", []))
    details = await asyncio.gather(
        *(
            reader.read(
                SERVICE,
                region,
                "get_email_identity",
                key=s["IdentityName"],
                EmailIdentity=s["IdentityName"],
            )
            for s in summaries
        )
    )
    for read in details:
        _keep(result, read)
    failed = next((d for d in details if not d.ok), None)
    if failed is not None:
        result.identities_error = failed.error
    elif result.sets_error and any(d.data and d.data.get("ConfigurationSetName") for d in details):
        # Without the configuration sets, a default set's TLS policy is unknown: not a pass.
        result.identities_error = f"configuration sets could not be read: {result.sets_error}"
    else:
        result.identities = [
            _identity(s, d.data or {}, tls) for s, d in zip(summaries, details, strict=True)
        ]
    return result


def _keep(result: SesRegion, read: Read) -> None:
    if read.raw_path:
        result.raw.append(read.raw_path)
