"""Connectors run concurrently under one deadline; a failing or slow one costs only its own
sections, and what it emitted before failing is kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from auditor.collect import collect
from auditor.model.errors import CollectionError
from auditor.model.section import Platform
from auditor.redact import Redactor
from connectors.base import CollectContext, Connector, RawRecord

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


class _Fake(Connector):
    title: ClassVar[str] = "Fake"
    platforms: ClassVar[tuple[Platform, ...]] = ("dns",)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, name: str, behaviour: str, delay: float = 0.0) -> None:
        super().__init__({}, Path())
        self.name = name  # type: ignore[misc]
        self.behaviour = behaviour
        self.delay = delay

    async def collect(self, ctx: CollectContext) -> None:
        ctx.add_subject("dns", "domain", f"{self.name}.example")
        ctx.add_section(
            "dns.first",
            platform="dns",
            subject=f"{self.name}.example",
            data={"ok": True},
            source="fake",
        )
        if self.behaviour == "sleep":
            await asyncio.sleep(self.delay)
        elif self.behaviour == "block":
            await ctx.run_blocking(time.sleep, self.delay)
        elif self.behaviour == "crash":
            raise RuntimeError("boom")
        elif self.behaviour == "denied":
            raise CollectionError("403 Forbidden", permission="Policy.Read.All")
        ctx.add_raw(
            RawRecord(path=f"{self.name}/r.json", source="fake", body=b"{}", collected_at=ctx.now)
        )
        ctx.add_section(
            "dns.second", platform="dns", subject=f"{self.name}.example", data={}, source="fake"
        )


def _run(*connectors: Connector, deadline: float = 5.0) -> Any:
    return collect(list(connectors), now=NOW, deadline_seconds=deadline, redactor=Redactor())


class _Rendezvous(Connector):
    """Finishes only if every other rendezvous connector is running at the same time: run one
    after another, they would all wait out the deadline."""

    title: ClassVar[str] = "Rendezvous"
    platforms: ClassVar[tuple[Platform, ...]] = ("dns",)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, name: str, barrier: threading.Barrier) -> None:
        super().__init__({}, Path())
        self.name = name  # type: ignore[misc]
        self.barrier = barrier

    async def collect(self, ctx: CollectContext) -> None:
        await ctx.run_blocking(self.barrier.wait, 10)  # as a blocking SDK call would
        ctx.add_section("dns.met", platform="dns", subject=self.name, data={}, source="test")


def test_connectors_run_concurrently() -> None:
    barrier = threading.Barrier(3)
    collection = _run(
        _Rendezvous("a", barrier),
        _Rendezvous("b", barrier),
        _Rendezvous("c", barrier),
        deadline=30,
    )
    assert {n: s.status for n, s in collection.snapshot.sources.items()} == dict.fromkeys(
        "abc", "ok"
    )
    assert len(collection.snapshot.sections) == 3


def test_a_crash_or_denial_costs_only_that_connector() -> None:
    collection = _run(_Fake("ok", "none"), _Fake("bad", "crash"), _Fake("denied", "denied"))
    sources = collection.snapshot.sources
    assert sources["ok"].status == "ok"
    assert sources["bad"].status == "error" and "RuntimeError: boom" in (sources["bad"].error or "")
    assert sources["denied"].error == "403 Forbidden (missing permission: Policy.Read.All)"
    names = {(s.name, s.subject) for s in collection.snapshot.sections}
    assert ("dns.second", "ok.example") in names
    # Emitted before the failure: kept.
    assert ("dns.first", "bad.example") in names
    assert ("dns.second", "bad.example") not in names


def test_deadline_stops_a_slow_connector_and_keeps_what_it_emitted() -> None:
    collection = _run(_Fake("fast", "none"), _Fake("slow", "sleep", 600), deadline=0.5)
    slow = collection.snapshot.sources["slow"]
    assert slow.status == "error" and "deadline" in (slow.error or "")
    assert collection.snapshot.sources["fast"].status == "ok"
    assert ("dns.first", "slow.example") in {
        (s.name, s.subject) for s in collection.snapshot.sections
    }
    assert collection.snapshot.scope["dns"]["domain"] == ["fast.example", "slow.example"]


def test_deadline_ends_the_run_even_if_a_blocking_call_never_returns() -> None:
    collection = _run(_Fake("hung", "block", 600), _Fake("fast", "none"), deadline=0.5)
    hung = collection.snapshot.sources["hung"]
    assert hung.status == "error" and "deadline" in (hung.error or "")
    assert collection.snapshot.sources["fast"].status == "ok"


def test_blocking_call_errors_reach_the_connector() -> None:
    collection = _run(_Failing())
    assert collection.snapshot.sources["failing"].error == "unexpected ValueError: from the SDK"


class _Failing(_Fake):
    def __init__(self) -> None:
        super().__init__("failing", "none")

    async def collect(self, ctx: CollectContext) -> None:
        def sdk_call() -> None:
            raise ValueError("from the SDK")

        await ctx.run_blocking(sdk_call)


def test_raw_paths_are_bundle_paths_and_made_unique() -> None:
    ctx = CollectContext(connector="x", now=NOW, deadline=time.monotonic() + 5)
    record = RawRecord(
        path="m365/graph/v1.0/users.json", source="graph", body=b"[]", collected_at=NOW
    )
    assert ctx.add_raw(record) == "raw/m365/graph/v1.0/users.json"
    assert ctx.add_raw(record) == "raw/m365/graph/v1.0/users~2.json"


class _LateSecret(Connector):
    """Keeps an answer that holds a token, and only then learns the token (as a connector that
    signs in again mid-run would): the answer was being scrubbed before the secret was known."""

    name: ClassVar[str] = "late"
    title: ClassVar[str] = "Late secret"
    platforms: ClassVar[tuple[Platform, ...]] = ("dns",)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    token = "late-token-4f9c1e7a2b"

    async def collect(self, ctx: CollectContext) -> None:
        ctx.add_subject("dns", "domain", "late.example")
        body = b'{"note": "the service echoed ' + self.token.encode() + b'"}'
        ctx.add_raw(RawRecord(path="late/r.json", source="fake", body=body, collected_at=ctx.now))
        await asyncio.sleep(0.2)  # the scrub of that answer is done or under way by now
        ctx.register_secret(self.token)


def test_an_answer_kept_before_its_secret_was_learnt_is_scrubbed_again() -> None:
    handed_over: list[RawRecord] = []
    collection = collect(
        [_LateSecret({}, Path())],
        now=NOW,
        deadline_seconds=5,
        redactor=Redactor(),
        on_scrubbed=handed_over.append,
    )
    ((_name, record),) = collection.raw
    assert _LateSecret.token.encode() not in record.body
    assert b"[REDACTED]" in record.body
    # The bundle was told of the answer twice: once too early, then clean; the last one counts.
    assert handed_over[-1].body == record.body
    assert all(r.path == "late/r.json" for r in handed_over)


def test_every_raw_answer_is_handed_over_clean_as_it_is_scrubbed() -> None:
    handed_over: list[RawRecord] = []
    collection = collect(
        [_Fake("a", "ok"), _Fake("b", "ok")],
        now=NOW,
        deadline_seconds=5,
        redactor=Redactor(),
        on_scrubbed=handed_over.append,
    )
    assert sorted(r.path for r in handed_over) == sorted(r.path for _c, r in collection.raw)


def test_objects_collected_while_the_collector_was_paused_are_frozen() -> None:
    import gc

    from auditor.collect import paused_gc

    before = gc.get_freeze_count()
    with paused_gc():
        kept = [[i] for i in range(1000)]  # lists: objects the collector tracks
    try:
        assert gc.get_freeze_count() >= before + len(kept)
        assert gc.isenabled()
    finally:
        gc.unfreeze()
