"""Verdicts of the shipped policies on Microsoft 365 answers read without the network: a
recorded tenant's files (or a changed copy) through the normaliser, into a snapshot, evaluated."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from auditor.engine import EvaluationContext, evaluate
from auditor.model.section import Section
from auditor.model.snapshot import Snapshot
from auditor.policy import PolicySet, load_policies
from auditor.resources import policies_dir
from auditor.results import Result
from connectors.m365.fetched import Fetched
from connectors.m365.normalise import M365Settings, normalise

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@cache
def shipped_policies() -> PolicySet:
    return load_policies([policies_dir()])


def evaluate_fetched(
    info: Mapping[str, Any],
    fetched: Mapping[str, Fetched],
    settings: M365Settings,
    profile: str = "hipaa",
    controls: Iterable[str] = ("m365.*",),
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Result]:
    """control -> result, for the tenant `info` names, as of NOW."""
    subject = info["default_domain"]
    snapshot = Snapshot(collected_at=NOW)
    snapshot.add_subject("m365", "tenant", subject)
    for s in normalise(fetched, settings):
        snapshot.sections.append(
            Section(s.name, "m365", subject, s.status, s.data, s.source, NOW, s.raw, s.reason)  # type: ignore[arg-type]
        )
    policies = shipped_policies().select(profile, list(controls))
    context = EvaluationContext(profile, NOW, parameters=parameters or {})
    results = evaluate(policies, snapshot, context).results
    return {r.control: r for r in results}
