"""Helpers shared by the tests: run the real CLI, open and alter bundles."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def run_cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`commsaudit ARGS` in a child process, as a user would run it."""
    full_env = dict(os.environ)
    full_env.pop("COMMSAUDIT_SIGNING_KEY", None)
    full_env["NO_COLOR"] = "1"
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "auditor", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def member_json(bundle: Path, name: str) -> Any:
    return json.loads(members(bundle)[name])


def rewrite(bundle: Path, target: Path, changes: dict[str, bytes | None]) -> Path:
    """Copy a bundle with some members replaced (or removed, for None), the way someone
    editing it with ordinary zip tools would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in changes:
                replacement = changes[info.filename]
                if replacement is not None:
                    dst.writestr(info.filename, replacement)
            else:
                dst.writestr(info.filename, src.read(info))
        for name, content in changes.items():
            if name not in src.namelist() and content is not None:
                dst.writestr(name, content)
    target.write_bytes(buffer.getvalue())
    return target


def data_span(bundle: Path, name: str) -> tuple[int, int]:
    """(offset, length) of a member's compressed bytes inside the archive file."""
    blob = bundle.read_bytes()
    with zipfile.ZipFile(bundle) as archive:
        info = archive.getinfo(name)
    start = info.header_offset
    name_len = int.from_bytes(blob[start + 26 : start + 28], "little")
    extra_len = int.from_bytes(blob[start + 28 : start + 30], "little")
    return start + 30 + name_len + extra_len, info.compress_size


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


@dataclass
class ServedWorld:
    """A `commsaudit sandbox email` child: the config it printed, and once it has stopped, its
    exit code and what it wrote to stderr."""

    config: str
    returncode: int | None = None
    stderr: str = ""


@contextlib.contextmanager
def email_sandbox(world: Path, cwd: Path, last_key: str) -> Iterator[ServedWorld]:
    """Serve `world` as a user would (`commsaudit sandbox email WORLD`), reading the config it
    prints up to the line that starts with `last_key`; stopped (SIGTERM) on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "auditor", "sandbox", "email", str(world)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    served = ServedWorld(config="")
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith(last_key)):
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "sandbox exited"
            lines.append(line)
        served.config = "".join(lines)
        yield served
    finally:
        process.terminate()
        _out, served.stderr = process.communicate(timeout=30)
        served.returncode = process.returncode


def half_trained_attestations(directory: Path) -> Path:
    """An attestations file on which org.training.current fails (half the workforce trained,
    a month ago): one failing control, for tests of what happens to a failure."""
    trained = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
    path = directory / "attestations.yaml"
    path.write_text(
        "organisation: Example Clinic\n"
        f"trainings:\n  - date: {trained}\n    workforce: 10\n    completed: 5\n"
    )
    return path


# A config that audits only the training control, from a replayed snapshot.json beside it.
TRAINING_REPLAY = '[replay]\nfiles = ["snapshot.json"]\n[policies]\ncontrols = ["org.training.*"]\n'


def training_snapshot(
    directory: Path, *, coverage: float = 0.99, age_days: int = 20, organisation: str = "Clinic"
) -> Path:
    """snapshot.json with one organisation's attested training: `org.training.current` passes
    at a coverage of 0.95 or more, trained within the year, and fails otherwise."""
    section = {
        "name": "org.training",
        "platform": "org",
        "subject": organisation,
        "status": "ok",
        "source": "attestations",
        # As the attestations connector writes it (its sections.json): a replayed snapshot is
        # checked against the catalogue like a collected one.
        "data": {
            "latest": {
                "date": (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=age_days)).isoformat(),
                "workforce": 100,
                "completed": round(coverage * 100),
                "age_days": age_days,
                "coverage": coverage,
            },
            "count": 1,
        },
    }
    path = directory / "snapshot.json"
    path.write_text(
        json.dumps(
            {
                "format": "commsaudit/snapshot/v1",
                "scope": {"org": {"organisation": [organisation]}},
                "sections": [section],
            }
        )
    )
    return path
