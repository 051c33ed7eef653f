"""The terminal summary and the progress display, on stderr (stdout is kept for --format json).
rich honours NO_COLOR and plain (non-terminal) output by itself."""

from __future__ import annotations

import json
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from auditor.reports.common import STATUS_LABELS, ReportInput, attention, counts, group_by
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


def make_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False)


def summary_table(report: ReportInput) -> Table:
    table = Table(title="Results by category", title_justify="left")
    table.add_column("Category")
    for status in STATUSES:
        table.add_column(STATUS_LABELS[status], justify="right", style=_STYLE[status])
    results = report.results.results
    for category, group in group_by(results, "category").items():
        c = counts(group)
        table.add_row(category, *[str(c[s]) if c[s] else "·" for s in STATUSES])
    total = counts(results)
    table.add_section()
    table.add_row("total", *[str(total[s]) for s in STATUSES], style="bold")
    return table


# Keys that say which item failed, in the order they are shown.
_ITEM_KEYS = ("name", "identity", "user", "resource", "setting", "declared", "live", "domain")
_PLACES_SHOWN = 3


def _where(result: Result) -> list[str]:
    """Which items failed, from the evidence's context (`name=phi-archive`), so the terminal
    line says what to fix without a trip to the report."""
    places: list[str] = []
    for evidence in result.evidence:
        context = evidence.context
        if not isinstance(context, dict):
            continue
        parts = [
            f"{key}={_plain(context[key])}"
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


def render(console: Console, report: ReportInput, *, bundle: str | None = None) -> None:
    console.print(summary_table(report))
    findings = attention(report.results.results)
    if findings:
        console.print()
        for result in findings[:_SHOWN]:
            label = STATUS_LABELS[result.status].upper()
            console.print(
                f"[{_STYLE[result.status]}]{label:<7}[/] [bold]{escape(result.control)}[/] "
                f"({escape(result.subject)}, {result.severity})"
            )
            console.print(Padding(Text(result.reason), (0, 0, 0, 8)))
            places = _where(result) if result.status == "fail" else []
            for place in places:
                console.print(Padding(Text(f"at {place}"), (0, 0, 0, 8)))
        if len(findings) > _SHOWN:
            console.print(f"… and {len(findings) - _SHOWN} more: see report.md")
    for warning in report.results.run.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if bundle:
        console.print()
        console.print(f"Evidence bundle: [bold]{escape(bundle)}[/]")


class CollectionProgress:
    """A line per connector while collection runs; silent when stderr is not a terminal."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> CollectionProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, connector: str, message: str) -> None:
        text = f"{connector}: {escape(message)}"
        if connector not in self._tasks:
            self._tasks[connector] = self._progress.add_task(text, total=None)
        else:
            self._progress.update(self._tasks[connector], description=text)
