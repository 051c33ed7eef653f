"""Where a result lives in the repository that ran the audit: its config file, and the line of
the table that brought the result's platform in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# The config table that brought each platform into the audit, for the location of its results.
_TABLE_OF_PLATFORM = {"org": "attestations"}
_DEFAULT_CONFIG_URI = "commsaudit.toml"


@dataclass(frozen=True)
class ConfigLocation:
    """Where, in the repository that ran the audit, its results point: code scanning shows the
    file an alert is in, and a path the repository lacks shows as "Preview unavailable". The
    config file is the one every repository that runs commsaudit has, and the line of a
    platform's table (`[m365]`, `[[aws]]`) is what scoped that platform's results."""

    uri: str = _DEFAULT_CONFIG_URI
    lines: dict[str, int] = field(default_factory=dict)  # table name -> its first line

    def line(self, platform: str) -> int:
        return self.lines.get(_TABLE_OF_PLATFORM.get(platform, platform), 1)


def locate_config(path: Path | None, root: Path) -> ConfigLocation:
    """`path` as the repository at `root` names it (its name alone when it lies outside, as
    the demo's does), with the first line of each top-level table."""
    if path is None:
        return ConfigLocation()
    try:
        uri = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        uri = path.name
    lines: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for number, line in enumerate(text.splitlines(), 1):
        table = _TABLE.match(line)
        if table is not None:
            lines.setdefault(table.group(1), number)
    return ConfigLocation(uri, lines)


_TABLE = re.compile(r"\s*\[\[?\s*([A-Za-z0-9_-]+)\s*[\].]")
