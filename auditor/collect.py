"""Run the configured connectors concurrently under one deadline and gather what they emit.

A connector that fails or runs out of time costs its own sections, which the engine then reports
as `error` with the reason; it never stops the run or the other connectors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from auditor.evidence.packing import spare_cores
from auditor.model.errors import CollectionError
from auditor.model.snapshot import Snapshot, SourceStatus
from auditor.redact import Redactor
from auditor.timeutil import utcnow
from connectors.base import CollectContext, Connector, RawRecord

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, str], None]  # (connector name, message)


@dataclass
class Collection:
    snapshot: Snapshot
    raw: list[tuple[str, RawRecord]] = field(default_factory=list)  # (connector, record)


async def _run_one(
    connector: Connector, ctx: CollectContext, timeout: float
) -> tuple[str, str | None]:
    try:
        async with asyncio.timeout(timeout):
            await connector.collect(ctx)
    except TimeoutError:
        return (
            "error",
            f"did not finish within the run's deadline ({timeout:.0f} s left when it started)",
        )
    except CollectionError as exc:
        reason = exc.reason
        if exc.permission and exc.permission not in reason:
            reason += f" (missing permission: {exc.permission})"
        return "error", reason
    except Exception as exc:  # a connector bug must not take the whole run down
        log.debug("connector %s crashed", connector.name, exc_info=True)
        return "error", f"unexpected {type(exc).__name__}: {exc}"
    return "ok", None


class _RawScrubber:
    """Raw answers scrubbed as they are kept, in worker threads, while the collection goes on:
    RE2 releases the GIL as it scans, so tens of megabytes of a large tenant's answers are
    scrubbed on the other core while the connector normalises them. An answer scrubbed before
    a secret was learnt is scrubbed again, from what was received, once collection ends."""

    def __init__(
        self, redactor: Redactor, on_scrubbed: Callable[[RawRecord], None] | None = None
    ) -> None:
        self._redactor = redactor
        self._on_scrubbed = on_scrubbed
        self._pool = concurrent.futures.ThreadPoolExecutor(
            spare_cores(), thread_name_prefix="scrub"
        )
        self._jobs: dict[int, concurrent.futures.Future[tuple[RawRecord, int]]] = {}

    def start(self, record: RawRecord) -> None:
        self._jobs[id(record)] = self._pool.submit(self._scrub, record)

    def _scrub(self, record: RawRecord) -> tuple[RawRecord, int]:
        generation = self._redactor.generation  # read first: a later secret means "again"
        body = self._redactor.bytes(record.body)
        cleaned = replace(record, body=body, request=self._redactor.json(record.request))
        if self._on_scrubbed is not None:
            self._on_scrubbed(cleaned)
        return cleaned, generation

    def scrubbed(self, record: RawRecord) -> RawRecord:
        job = self._jobs.pop(id(record), None)
        if job is not None:
            cleaned, generation = job.result()
            if generation == self._redactor.generation:
                return cleaned
        return self._scrub(record)[0]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reporter(progress: ProgressCallback | None, name: str) -> Callable[[str], None]:
    if progress is None:
        return lambda _message: None
    return lambda message: progress(name, message)


async def collect_async(
    connectors: list[Connector],
    *,
    now: dt.datetime,
    deadline_seconds: float,
    redactor: Redactor,
    progress: ProgressCallback | None = None,
    on_scrubbed: Callable[[RawRecord], None] | None = None,
    wanted: frozenset[str] | None = None,
) -> Collection:
    """`on_scrubbed` is told of each raw answer once it is clean, from a worker thread (the
    bundle starts packing it then); told again if the answer had to be scrubbed again."""
    snapshot = Snapshot(collected_at=now)
    deadline = time.monotonic() + deadline_seconds
    scrubber = _RawScrubber(redactor, on_scrubbed)
    try:
        return await _collect_with(
            connectors, snapshot, deadline, redactor, scrubber, progress, wanted
        )
    finally:
        scrubber.close()


async def _collect_with(
    connectors: list[Connector],
    snapshot: Snapshot,
    deadline: float,
    redactor: Redactor,
    scrubber: _RawScrubber,
    progress: ProgressCallback | None,
    wanted: frozenset[str] | None = None,
) -> Collection:
    contexts: list[tuple[Connector, CollectContext]] = []
    for connector in connectors:
        for platform in connector.covered_platforms():
            snapshot.scope.setdefault(platform, {})
        for platform, kind, subject in connector.planned_subjects():
            snapshot.add_subject(platform, kind, subject)
        ctx = CollectContext(
            connector=connector.instance,
            raw_prefix="" if connector.instance == connector.name else f"{connector.instance}/",
            now=snapshot.collected_at,
            deadline=deadline,
            progress=_reporter(progress, connector.instance),
            register_secret=redactor.add,
            on_raw=scrubber.start,
            wanted=wanted,
        )
        contexts.append((connector, ctx))

    done = {connector.instance: asyncio.Event() for connector, _ctx in contexts}
    by_name = {connector.instance: ctx for connector, ctx in contexts}
    # What a connector depends on is a kind ("m365"): it waits for every configured copy.
    kinds = {connector.instance: connector.name for connector, _ctx in contexts}

    async def run(
        connector: Connector, ctx: CollectContext
    ) -> tuple[str, str | None, dt.datetime, dt.datetime]:
        try:
            upstream = [i for i, kind in kinds.items() if kind in connector.depends_on]
            waits = [done[i].wait() for i in upstream]
            if waits:
                ctx.progress(f"waiting for {', '.join(connector.depends_on)}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*waits), max(0.0, deadline - time.monotonic())
                    )
                ctx.upstream = [s for i in upstream for s in by_name[i].sections]
            started = utcnow()
            ctx.progress("collecting")
            status, error = await _run_one(connector, ctx, max(0.0, deadline - time.monotonic()))
            ctx.progress("done" if status == "ok" else f"failed: {error}")
            return status, error, started, utcnow()
        finally:
            done[connector.instance].set()

    outcomes = await asyncio.gather(*(run(c, ctx) for c, ctx in contexts))

    collection = Collection(snapshot=snapshot)
    for (connector, ctx), (status, error, started, finished) in zip(
        contexts, outcomes, strict=True
    ):
        snapshot.sources[connector.instance] = SourceStatus(
            title=connector.title
            if connector.instance == connector.name
            else f"{connector.title} ({connector.instance})",
            status=status,
            platforms=list(connector.covered_platforms()),
            started_at=started,
            finished_at=finished,
            error=redactor.text(error) if error else None,
            scope=connector.scope(),
        )
        for platform, kind, subject in ctx.subjects:
            snapshot.add_subject(platform, kind, subject)
        if status == "error" and not ctx.subjects:
            # Failed before it could name what it audits: name it from config, so its controls
            # show as error for that subject instead of going missing beside the others.
            for platform, kind, subject in connector.fallback_subjects():
                snapshot.add_subject(platform, kind, subject)
        # Secrets are removed here, at the source: everything downstream (snapshot, results,
        # reports, the JSON on stdout) is built from clean data. The sections on this thread,
        # while the raw answers' scrubbing, begun as they were kept, finishes in the workers.
        snapshot.sections.extend(
            replace(
                s, data=redactor.json(s.data), reason=redactor.text(s.reason) if s.reason else None
            )
            for s in ctx.sections
        )
        collection.raw.extend((connector.instance, scrubber.scrubbed(r)) for r in ctx.raw)
    return collection


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collection parses large JSON answers into acyclic structures (a 100,000-user tenant is
    a million objects); the cyclic garbage collector's repeated full scans of them cost seconds
    and free nothing. It is paused while connectors run and resumed afterwards, with what was
    collected moved out of its sight (`gc.freeze`): otherwise the first collections after the
    pause walk every object the pause let pile up in the youngest generation, twice (a fifth of
    a second on that tenant). Frozen objects are still freed when their last reference goes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def collect(
    connectors: list[Connector],
    *,
    now: dt.datetime,
    deadline_seconds: float,
    redactor: Redactor,
    progress: ProgressCallback | None = None,
    on_scrubbed: Callable[[RawRecord], None] | None = None,
    wanted: frozenset[str] | None = None,
) -> Collection:
    collected: list[Collection] = []

    async def main() -> None:
        # The collection is handed over outside the task's result: asyncio.run, restoring its
        # SIGINT handler, builds the repr of its main task, result included, and a whole tenant's
        # repr takes seconds to build (CPython 3.11's signal.getsignal formats it for an error
        # message it then drops).
        collected.append(
            await collect_async(
                connectors,
                now=now,
                deadline_seconds=deadline_seconds,
                redactor=redactor,
                progress=progress,
                on_scrubbed=on_scrubbed,
                wanted=wanted,
            )
        )

    with paused_gc():
        asyncio.run(main())
    return collected[0]
