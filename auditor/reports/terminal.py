"""The terminal summary and the progress display, on stderr (stdout is kept for --format json).
rich honours NO_COLOR and plain (non-terminal) output by itself.

stderr is the GitHub Actions log, and the runner reads every line of it for workflow commands:
data (a tenant's names, a reason) passes the run's redactor and loses its control characters,
and whatever reaches stderr through `make_console` or `log_stream` cannot start a command."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from auditor.redact import Redactor
from auditor.reports.common import (
    STATUS_LABELS,
    ReportInput,
    attention,
    counts,
    group_by,
    one_line,
)
from auditor.results import STATUSES, Result

_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "error": "yellow",
    "not_applicable": "dim",
    "waived": "magenta",
    "inherited": "cyan",
}
_SHOWN = 20


def _stderr() -> TextIO:
    """sys.stderr, or the stream behind it while rich's live display redirects it (as rich's
    own Console does; writing to the proxy would come back here)."""
    stream: TextIO = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
    return stream


# Where GitHub's runner ends a line (LF, CR, CRLF), and every other line break, to be safe.
_LINE_BREAK = re.compile(r"(\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029])")
# What the runner skips before it looks for `::` (it trims white space), and colour codes.
_LINE_HEAD = re.compile(r"(?:\s|\x1b\[[0-9;?]*[ -/]*[@-~])*")
_FENCES = ("```", "~~~")
# Invisible, and not white space to .NET's TrimStart or Python's strip.
_BREAK = "\u200b"


class CommandSafeStream:
    """A text stream (stderr, read when written to) on which no line is a GitHub Actions
    workflow command: a `:` that starts a line (after white space) gets a zero-width space
    before it, and so does the `[` of the old form `##[`, which counts anywhere in a line. A
    line never starts a code fence either: when the audit cannot run, the action puts the log's
    last lines in the job summary inside one.
    Writes may split a line anywhere; what was written before is taken into account, and
    writers on other threads (log records during collection) take turns."""

    def __init__(self, target: Callable[[], TextIO] = _stderr) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._at_head = True  # nothing but white space so far on this line
        self._tail = ""  # the line's last two characters, for a `##[` split between writes

    def write(self, text: str) -> int:
        with self._lock:
            out: list[str] = []
            for part in _LINE_BREAK.split(text):
                if not part:
                    continue
                if _LINE_BREAK.fullmatch(part):
                    self._at_head, self._tail = True, ""
                    out.append(part)
                else:
                    out.append(self._inert(part))
            self._target().write("".join(out))
        return len(text)

    def _inert(self, part: str) -> str:
        if self._at_head:
            head = _LINE_HEAD.match(part)
            start = head.end() if head else 0
            if start < len(part):
                self._at_head = False
                if part[start] == ":" or part.startswith(_FENCES, start):
                    part = part[:start] + _BREAK + part[start:]
        joined = self._tail + part
        part = joined.replace("##[", "##" + _BREAK + "[")[len(self._tail) :]
        self._tail = joined[-2:]
        return part

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, errors …: the stream's own
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._target(), name)


_LOG = CommandSafeStream()


def log_stream() -> CommandSafeStream:
    """stderr, for log records and error lines."""
    return _LOG


def make_console() -> Console:
    return Console(file=_LOG, highlight=False, soft_wrap=False)  # type: ignore[arg-type]


def _shown(redactor: Redactor) -> Callable[[object], str]:
    """Data as the log may show it: no secret the run knows, on one line."""

    def show(value: object) -> str:
        return one_line(redactor.text(value if isinstance(value, str) else str(value)))

    return show


def summary_table(report: ReportInput) -> Table:
    table = Table(title="Results by category", title_justify="left")
    table.add_column("Category")
    for status in STATUSES:
        table.add_column(STATUS_LABELS[status], justify="right", style=_STYLE[status])
    results = report.results.results
    for category, group in group_by(results, "category").items():
        c = counts(group)
        # Text: a category (from a policy file) is not markup.
        table.add_row(Text(one_line(category)), *[str(c[s]) if c[s] else "·" for s in STATUSES])
    total = counts(results)
    table.add_section()
    table.add_row("total", *[str(total[s]) for s in STATUSES], style="bold")
    return table


# Keys that say which item failed, in the order they are shown.
_ITEM_KEYS = ("name", "identity", "user", "resource", "setting", "declared", "live", "domain")
_PLACES_SHOWN = 3


def _where(result: Result, show: Callable[[object], str] = str) -> list[str]:
    """Which items failed, from the evidence's context (`name=phi-archive`), so the terminal
    line says what to fix without a trip to the report."""
    places: list[str] = []
    for evidence in result.evidence:
        context = evidence.context
        if not isinstance(context, dict):
            continue
        parts = [
            f"{key}={show(_plain(context[key]))}"
            for key in _ITEM_KEYS
            if key in context and not isinstance(context[key], dict | list)
        ]
        place = " ".join(parts)
        if place and place not in places:
            places.append(place)
    if len(places) > _PLACES_SHOWN:
        return [*places[:_PLACES_SHOWN], f"… and {len(places) - _PLACES_SHOWN} more"]
    return places


def _plain(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render(
    console: Console,
    report: ReportInput,
    *,
    bundle: str | None = None,
    redactor: Redactor | None = None,
) -> None:
    """The summary. `redactor` is the run's, which knows its secrets (`secret_env` values,
    the signing key, tokens); without one, the environment's."""
    show = _shown(redactor or Redactor.from_environment())
    console.print(summary_table(report))
    findings = attention(report.results.results)
    # Under the scuba profile a finding names both views: its HIPAA citations and the CISA SCuBA
    # policies it evaluates (other profiles keep the shorter line).
    both_views = report.results.run.profile == "scuba"
    if findings:
        console.print()
        for result in findings[:_SHOWN]:
            label = STATUS_LABELS[result.status].upper()
            views = (
                f"; {', '.join(result.citations)}; SCuBA {', '.join(result.scuba)}"
                if both_views and result.scuba
                else ""
            )
            console.print(
                f"[{_STYLE[result.status]}]{label:<7}[/] [bold]{escape(show(result.control))}[/] "
                f"({escape(show(result.subject))}, {escape(show(result.severity))}"
                f"{escape(views)})"
            )
            console.print(Padding(Text(show(result.reason)), (0, 0, 0, 8)))
            places = _where(result, show) if result.status == "fail" else []
            for place in places:
                console.print(Padding(Text(f"at {place}"), (0, 0, 0, 8)))
        if len(findings) > _SHOWN:
            console.print(f"… and {len(findings) - _SHOWN} more: see report.md")
    for warning in report.results.run.warnings:
        console.print(f"[yellow]warning:[/] {escape(show(warning))}")
    if bundle:
        console.print()
        console.print(f"Evidence bundle: [bold]{escape(show(bundle))}[/]")


# Without a terminal (a CI log), how often each connector still collecting says where it is.
PROGRESS_INTERVAL_SECONDS = 5.0


class CollectionProgress:
    """Where each connector is while collection runs. In a terminal, a live line per connector;
    without one (a CI log), a plain line when a connector starts and ends, and every few seconds
    in between (pages and items read, requests, retries, elapsed), so a long run never looks
    hung; with `quiet`, nothing."""

    def __init__(
        self,
        console: Console,
        redactor: Redactor | None = None,
        *,
        quiet: bool = False,
        interval: float = PROGRESS_INTERVAL_SECONDS,
    ) -> None:
        self._show = _shown(redactor or Redactor.from_environment())
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet or not console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}
        self._plain = not quiet and not console.is_terminal
        self._interval = interval
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[str, float]] = {}  # connector -> (message, started)
        self._finished: set[str] = set()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> CollectionProgress:
        self._progress.__enter__()
        if self._plain:
            self._ticker = threading.Thread(
                target=self._tick, name="commsaudit-progress", daemon=True
            )
            self._ticker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, connector: str, message: str) -> None:
        text = f"{escape(self._show(connector))}: {escape(self._show(message))}"
        if connector not in self._tasks:
            self._tasks[connector] = self._progress.add_task(text, total=None)
        else:
            self._progress.update(self._tasks[connector], description=text)
        if self._plain:
            self._note(connector, message)

    def _note(self, connector: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            first = connector not in self._latest
            started = self._latest[connector][1] if not first else now
            self._latest[connector] = (message, started)
            final = message == "done" or message.startswith("failed")
            if final:
                self._finished.add(connector)
        if first or final:
            self._line(connector, message, now - started)

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                running = [
                    (name, message, now - started)
                    for name, (message, started) in self._latest.items()
                    if name not in self._finished
                ]
            for name, message, elapsed in running:
                self._line(name, message, elapsed)

    def _line(self, connector: str, message: str, elapsed: float) -> None:
        log_stream().write(
            f"commsaudit: {self._show(connector)}: {self._show(message)} ({elapsed:.0f} s)\n"
        )
        log_stream().flush()
