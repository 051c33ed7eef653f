"""Progress where there is no terminal (a CI log): a long collection says where it is at a
steady interval, `-v` does not flood the log with every HTTP header, and `--quiet` says nothing
but the summary, warnings and errors."""

from __future__ import annotations

import re
from pathlib import Path

from connectors.m365.sandbox.server import Faults, Sandbox

from helpers import REPO, run_cli

TENANT = REPO / "fixtures" / "tenants" / "contoso-health"
# A line of the plain progress display: connector, what it is doing, seconds since it began.
_LINE = re.compile(r"^commsaudit: (\S+): (.*) \((\d+) s\)$")


def _audit(tmp_path: Path, *flags: str) -> str:
    with Sandbox(TENANT, faults=Faults(latency_ms=400)) as served:
        config = tmp_path / "commsaudit.toml"
        config.write_text(served.config_toml() + '[evidence]\nout = "out"\n')
        proc = run_cli(
            *flags, "audit", "--config", config, cwd=tmp_path,
            env={**served.environment(), "COMMSAUDIT_PROGRESS_SECONDS": "0.5"},
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    return proc.stderr


def test_without_a_terminal_each_connector_reports_at_a_steady_interval(tmp_path: Path) -> None:
    lines = [m for line in _audit(tmp_path).splitlines() if (m := _LINE.match(line))]
    m365 = [(m.group(2), int(m.group(3))) for m in lines if m.group(1) == "m365"]
    assert m365[0] == ("collecting", 0)
    assert m365[-1][0] == "done"
    counting = [message for message, _s in m365 if " pages, " in message]
    assert counting, m365  # pages, items, requests and retries while it reads
    assert re.search(r"\d+ pages, [\d,]+ items; \d+ requests \(\d+ retried\)", counting[-1])
    seconds = [s for _m, s in m365]
    assert seconds == sorted(seconds)


def test_quiet_shows_no_progress_and_verbose_no_http_headers(tmp_path: Path) -> None:
    for name in ("quiet", "verbose"):
        (tmp_path / name).mkdir()
    quiet = _audit(tmp_path / "quiet", "--quiet")
    assert not [line for line in quiet.splitlines() if _LINE.match(line)]
    assert "Evidence bundle:" in quiet  # the summary is still there
    verbose = _audit(tmp_path / "verbose", "-v")
    assert "Request headers:" not in verbose and "Response headers:" not in verbose
