"""The interface every connector implements, and the context it collects through.

A connector receives its config section, reads its platform (read-only), and reports through the
`CollectContext`: the subjects it audits, every raw response as received, and the normalised
sections the policies will read. Anything it emits before failing or running out of time is kept;
what it did not emit becomes `error` for the controls that needed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from auditor.model.section import Platform, Section, SectionStatus, SubjectKind

T = TypeVar("T")


@dataclass(frozen=True)
class RawRecord:
    """One response as received: kept in the bundle under `raw/<path>`."""

    path: str
    source: str
    body: bytes
    collected_at: dt.datetime
    request: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Permission:
    """A least-privilege permission a connector needs, as `commsaudit permissions` prints it."""

    name: str
    why: str


@dataclass
class CollectContext:
    """What a connector collects through. One per connector per run."""

    connector: str
    now: dt.datetime
    deadline: float
    progress: Callable[[str], None] = lambda _message: None
    register_secret: Callable[[str], None] = lambda _value: None
    subjects: list[tuple[Platform, SubjectKind, str]] = field(default_factory=list)
    raw: list[RawRecord] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    #: Sections of the connectors this one depends on, once they have finished.
    upstream: list[Section] = field(default_factory=list)
    #: Blocking calls in flight at once for this connector.
    max_blocking: int = 16
    #: Put before every raw path, so two copies of one connector never write the same file.
    raw_prefix: str = ""
    #: Told of each response as it is kept: the run scrubs it at once, beside the collection.
    on_raw: Callable[[RawRecord], None] = lambda _record: None
    #: The sections the run's policies read (None: every one). A connector may leave out the
    #: reads no wanted section needs; it must not emit a section it did not read for.
    wanted: frozenset[str] | None = None
    _blocking_slots: asyncio.Semaphore = field(init=False, repr=False)
    _taken: set[str] = field(init=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        self._blocking_slots = asyncio.Semaphore(self.max_blocking)

    def add_subject(self, platform: Platform, kind: SubjectKind, subject: str) -> None:
        entry = (platform, kind, subject)
        if entry not in self.subjects:
            self.subjects.append(entry)

    def add_raw(self, record: RawRecord) -> str:
        """Keep a response; returns its path in the bundle (`raw/...`, made unique if the path
        repeats), for the sections read from it to cite."""
        if self.raw_prefix:
            record = replace(record, path=self.raw_prefix + record.path)
        path = record.path
        n = 2
        while path in self._taken:
            stem, dot, ext = record.path.rpartition(".")
            path = f"{stem}~{n}.{ext}" if dot else f"{record.path}~{n}"
            n += 1
        if path != record.path:
            record = RawRecord(
                path=path,
                source=record.source,
                body=record.body,
                collected_at=record.collected_at,
                request=record.request,
                status=record.status,
                media_type=record.media_type,
            )
        self.raw.append(record)
        self._taken.add(path)
        self.on_raw(record)
        return f"raw/{path}"

    def add_section(
        self,
        name: str,
        *,
        platform: Platform,
        subject: str,
        data: Any,
        source: str,
        raw: tuple[str, ...] = (),
        status: SectionStatus = "ok",
        reason: str | None = None,
        collected_at: dt.datetime | None = None,
    ) -> None:
        if self.raw_prefix:
            # Raw paths a connector computed itself (not returned by add_raw) get the prefix too.
            raw = tuple(
                p
                if not p.startswith("raw/") or p.startswith(f"raw/{self.raw_prefix}")
                else f"raw/{self.raw_prefix}{p[4:]}"
                for p in raw
            )
        self.sections.append(
            Section(
                name=name,
                platform=platform,
                subject=subject,
                status=status,
                data=data,
                source=source,
                collected_at=collected_at or self.now,
                raw=raw,
                reason=reason,
                connector=self.connector,
            )
        )

    def remaining(self) -> float:
        """Seconds left before the run's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in a worker thread so other connectors keep going.

        The thread is a daemon of its own, not one of asyncio's default executor: when the run's
        deadline passes, the run ends and the process can exit even if an SDK call never returns
        (asyncio.run would otherwise wait for that thread at shutdown)."""
        async with self._blocking_slots:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()

            def settle(value: T | None, error: BaseException | None) -> None:
                if future.done():
                    return  # the caller gave up (deadline) before the call returned
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)  # type: ignore[arg-type]

            def work() -> None:
                try:
                    value = fn(*args)
                except BaseException as exc:  # handed to the awaiting coroutine as is
                    outcome: tuple[T | None, BaseException | None] = (None, exc)
                else:
                    outcome = (value, None)
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                    loop.call_soon_threadsafe(settle, *outcome)

            threading.Thread(target=work, name=f"commsaudit-{self.connector}", daemon=True).start()
            return await future


class Connector(ABC):
    """A source of evidence. Subclasses set the class attributes and implement `collect`."""

    #: The config section that enables it (`[attestations]`).
    name: ClassVar[str]
    #: What a person calls it.
    title: ClassVar[str]
    #: The platforms whose sections it fills.
    platforms: ClassVar[tuple[Platform, ...]]
    #: JSON Schema (draft 2020-12) of its config section; unknown keys are errors.
    config_schema: ClassVar[dict[str, Any]]
    #: Connectors whose sections this one reads (in `ctx.upstream`); it starts when they end.
    depends_on: ClassVar[tuple[str, ...]] = ()
    #: The sections of those connectors it reads (`ctx.upstream`): collected whatever the
    #: run's policies read themselves.
    consumes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def grant_guide(cls) -> tuple[dict[str, Any], str]:
        """How to grant `permissions()`, for `commsaudit permissions`: members for its JSON
        output (an IAM policy document, a script) and the same for a person to read."""
        return {}, ""

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self._instance: str | None = None

    @property
    def instance(self) -> str:
        """This configured copy's name: `m365`, or `m365-2` for a second [[m365]] table."""
        return self._instance or self.name

    @instance.setter
    def instance(self, value: str) -> None:
        self._instance = value

    def preflight(self, now: dt.datetime) -> None:  # noqa: B027 - optional hook
        """Check local inputs before any collection; raise InputError if they are bad.
        Most connectors have nothing local to check."""

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        """Subjects known from config alone, so a failure before discovery still names them."""
        return []

    def fallback_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        """What to call this connector's subjects if it fails before finding them (a tenant id
        before its domain is known), so its controls are `error` rather than missing."""
        return []

    def covered_platforms(self) -> list[Platform]:
        """The platforms this configured instance fills: they are in the audit's scope."""
        return list(self.platforms)

    def scope(self) -> dict[str, Any]:
        """What this connector will examine, for the manifest (no secrets)."""
        return {}

    @classmethod
    def permissions(cls) -> list[Permission]:
        return []

    @abstractmethod
    async def collect(self, ctx: CollectContext) -> None:
        """Read the platform and report through `ctx`. Raise CollectionError on failure."""
