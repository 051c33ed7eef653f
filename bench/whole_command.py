"""Time `commsaudit audit` as a user runs it: a process of its own, from start to exit, with its
peak memory and the phase times its bundle's manifest records."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CommandRun:
    wall: float
    exit_code: int
    peak_mib: float
    timings: dict[str, float]
    summary: dict[str, int]
    stderr: str
    # The command's processor time, user and system: with one interpreter's lock, a floor the
    # wall time cannot go below however well the waits overlap.
    cpu: float = 0.0

    def phases(self) -> str:
        """`collect 4.1 s, evaluate 0.4 s, …; redaction 0.1 s (2%)`."""
        parts = [f"{k} {v:.2f} s" for k, v in self.timings.items() if k != "redaction"]
        redaction = self.timings.get("redaction", 0.0)
        share = 100 * redaction / self.wall if self.wall else 0.0
        return ", ".join(parts) + f"; redaction {redaction:.2f} s ({share:.1f}% of the run)"


def compile_bytecode() -> None:
    """Compile this tree's modules, as an installed package has them (pip compiles on install).
    Without it, a machine that sets PYTHONDONTWRITEBYTECODE (CI images often do) compiles every
    module of ours on every run, a sixth of a second no installed copy spends. The bytecode goes
    where Python looks for it (`__pycache__`, which git ignores)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "auditor"), str(ROOT / "connectors")],
        env=env,
        check=True,
    )


def run_audit(config: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> CommandRun:
    """`commsaudit audit --config CONFIG --out OUT ARGS` in a child process, with this tree's
    bytecode compiled beforehand (see `compile_bytecode`)."""
    compile_bytecode()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditor",
            "audit",
            "--config",
            str(config),
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=config.parent,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
        check=False,
    )
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime - cpu_before
    if proc.returncode == 2:
        raise SystemExit(f"commsaudit audit could not run:\n{proc.stderr[-3000:]}")
    bundle = max(out.glob("commsaudit-*.zip"), key=lambda p: p.stat().st_mtime)
    with zipfile.ZipFile(bundle) as archive:
        manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
        results: dict[str, Any] = json.loads(archive.read("results.json"))
    return CommandRun(
        wall=wall,
        exit_code=proc.returncode,
        # The largest child this process has waited for: the audit (servers are still running).
        peak_mib=max(peak, before) / 1024,
        timings=dict((manifest.get("timings") or {}).get("seconds") or {}),
        summary=results["summary"],
        stderr=proc.stderr,
        cpu=cpu,
    )
