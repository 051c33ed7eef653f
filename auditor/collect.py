"""Run the configured connectors concurrently under one deadline and gather what they emit.

A connector that fails or runs out of time costs its own sections, which the engine then reports
as `error` with the reason; it never stops the run or the other connectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from auditor.redact import Redactor
from auditor.snapshot import Snapshot, SourceStatus
from auditor.timeutil import utcnow
from connectors.base import CollectContext, CollectionError, Connector, RawRecord

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
) -> Collection:
    snapshot = Snapshot(collected_at=now)
    deadline = time.monotonic() + deadline_seconds
    contexts: list[tuple[Connector, CollectContext]] = []
    for connector in connectors:
        for platform in connector.covered_platforms():
            snapshot.scope.setdefault(platform, {})
        for platform, kind, subject in connector.planned_subjects():
            snapshot.add_subject(platform, kind, subject)
        ctx = CollectContext(
            connector=connector.instance,
            raw_prefix="" if connector.instance == connector.name else f"{connector.instance}/",
            now=now,
            deadline=deadline,
            progress=_reporter(progress, connector.instance),
            register_secret=redactor.add,
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
        # reports, the JSON on stdout) is built from clean data.
        snapshot.sections.extend(
            replace(
                s, data=redactor.json(s.data), reason=redactor.text(s.reason) if s.reason else None
            )
            for s in ctx.sections
        )
        collection.raw.extend(
            (
                connector.instance,
                replace(r, body=redactor.bytes(r.body), request=redactor.json(r.request)),
            )
            for r in ctx.raw
        )
    return collection


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collection parses large JSON answers into acyclic structures (a 100,000-user tenant is
    a million objects); the cyclic garbage collector's repeated full scans of them cost seconds
    and free nothing. It is paused while connectors run and resumed afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def collect(
    connectors: list[Connector],
    *,
    now: dt.datetime,
    deadline_seconds: float,
    redactor: Redactor,
    progress: ProgressCallback | None = None,
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
            )
        )

    with paused_gc():
        asyncio.run(main())
    return collected[0]
