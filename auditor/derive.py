"""Sections computed from other sections once collection is done.

Some controls join facts from two connectors: "every vendor in use has a BAA" needs the vendors
that the platform connectors found (`<platform>.vendors`) and the agreements on file (`org.baa`).
JSON Schema cannot join, so the join happens here and its result is an ordinary section, kept in
the snapshot (marked derived) so `verify` re-evaluates the very same data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from auditor.model.section import Section, SectionStatus
from auditor.model.snapshot import Snapshot


def _covers(agreement: dict[str, Any], service: str) -> bool:
    covered = {s.lower() for s in agreement.get("services", [])}
    return "*" in covered or service.lower() in covered


def _best_agreement(
    agreements: list[dict[str, Any]], vendor: str, services: list[str]
) -> dict[str, Any] | None:
    mine = [a for a in agreements if a.get("vendor") == vendor]
    if not mine:
        return None

    def rank(a: dict[str, Any]) -> tuple[bool, int, str]:
        return (bool(a.get("current")), sum(_covers(a, s) for s in services), a.get("signed", ""))

    return max(mine, key=rank)


def _vendor_entry(
    vendor: dict[str, Any], agreements: list[dict[str, Any]] | None
) -> dict[str, Any]:
    services = sorted(set(vendor.get("services", [])))
    agreement = _best_agreement(agreements or [], vendor["vendor"], services)
    uncovered = [s for s in services if agreement is None or not _covers(agreement, s)]
    return {
        "vendor": vendor["vendor"],
        "name": vendor.get("name", vendor["vendor"]),
        "services_in_use": services,
        "attestations_on_file": agreements is not None,
        "agreement": agreement,
        "current": bool(agreement and agreement.get("current")),
        "uncovered_services": uncovered,
        "covered": bool(agreement and agreement.get("current")) and not uncovered,
    }


Derivation = Callable[[Snapshot], None]


def derive(snapshot: Snapshot, derivations: Sequence[Derivation] = ()) -> None:
    """Add the derived sections to `snapshot` in place (once: a snapshot that already holds
    derived sections, such as one read back from a bundle, is left as it is): the connectors'
    own `derivations` (connectors/registry.py) first, then the vendor agreements, which read
    every platform's sections."""
    if snapshot.derived:
        return
    for derivation in [*derivations, vendor_agreements]:
        derivation(snapshot)


def vendor_agreements(snapshot: Snapshot) -> None:
    """For each platform's vendors in use (`<platform>.vendors`), the business associate
    agreement on file that covers them (`org.baa`): `<platform>.vendor_agreements`, one
    `provider.<vendor>` section each, and `org.vendors_in_use`."""
    organisations = snapshot.scope.get("org", {}).get("organisation", [])
    baa_section = snapshot.section("org.baa", organisations[0]) if organisations else None
    agreements: list[dict[str, Any]] | None = None
    baa_error: str | None = None
    if baa_section is not None:
        if baa_section.status == "ok":
            agreements = list(baa_section.data.get("agreements", []))
        else:
            baa_error = baa_section.reason or "the agreements on file could not be read"

    vendor_sections = [
        s for s in snapshot.sections if s.name.endswith(".vendors") and s.name.count(".") == 1
    ]
    in_use: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    inputs_raw: list[str] = list(baa_section.raw) if baa_section else []

    for section in vendor_sections:
        inputs_raw.extend(section.raw)
        agreements_name = section.name.replace(".vendors", ".vendor_agreements")
        snapshot.sections.append(
            Section(
                name=agreements_name,
                platform=section.platform,
                subject=section.subject,
                status="error" if section.status != "ok" or baa_error else "ok",
                data={"vendors": [_vendor_entry(v, agreements) for v in section.data or []]}
                if section.status == "ok"
                else None,
                source=f"derived from {section.name} and org.baa",
                collected_at=section.collected_at,
                raw=tuple(dict.fromkeys([*section.raw, *(baa_section.raw if baa_section else ())])),
                reason=section.reason if section.status != "ok" else baa_error,
                connector="derive",
            )
        )
        snapshot.derived.add((agreements_name, section.subject))
        if section.status != "ok":
            problems.append(f"{section.name} for {section.subject}: {section.reason}")
            continue
        for vendor in section.data:
            name = f"provider.{vendor['vendor']}"
            entry = _vendor_entry(vendor, agreements)
            provider_status: SectionStatus = "error" if baa_error else "ok"
            snapshot.sections.append(
                Section(
                    name=name,
                    platform=section.platform,
                    subject=section.subject,
                    status=provider_status,
                    data=entry,
                    source=f"derived from {section.name} and org.baa",
                    collected_at=section.collected_at,
                    raw=tuple(
                        dict.fromkeys([*section.raw, *(baa_section.raw if baa_section else ())])
                    ),
                    reason=baa_error,
                    connector="derive",
                )
            )
            snapshot.derived.add((name, section.subject))
            merged = in_use.setdefault(
                vendor["vendor"],
                {
                    "vendor": vendor["vendor"],
                    "name": vendor.get("name", vendor["vendor"]),
                    "services": [],
                    "found_in": [],
                },
            )
            merged["services"] = sorted(set(merged["services"]) | set(vendor.get("services", [])))
            merged["found_in"].append(f"{section.platform}:{section.subject}")

    for _name, source in snapshot.sources.items():
        if source.status == "error" and any(p != "org" for p in source.platforms):
            problems.append(f"{source.title} failed, so its vendors are unknown: {source.error}")

    if not organisations:
        return
    organisation = organisations[0]
    entries = []
    for vendor in in_use.values():
        entry = _vendor_entry(vendor, agreements)
        entry["found_in"] = vendor["found_in"]
        entries.append(entry)
    status: SectionStatus = "ok"
    reason = None
    if baa_error or problems:
        status = "error"
        reason = "; ".join([*([baa_error] if baa_error else []), *problems])
    snapshot.sections.append(
        Section(
            name="org.vendors_in_use",
            platform="org",
            subject=organisation,
            status=status,
            data={"vendors": entries},
            source="derived from <platform>.vendors and org.baa",
            collected_at=snapshot.collected_at,
            raw=tuple(dict.fromkeys(inputs_raw)),
            reason=reason,
            connector="derive",
        )
    )
    snapshot.derived.add(("org.vendors_in_use", organisation))
