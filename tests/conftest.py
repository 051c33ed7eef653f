from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli


@dataclass
class DemoRun:
    out: Path
    bundle: Path
    public_key: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def results(self) -> dict[str, Any]:
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`commsaudit audit --demo --format json`, run once for the session."""
    work = tmp_path_factory.mktemp("demo")
    proc = run_cli("audit", "--demo", "--format", "json", "--out", work / "out", cwd=work)
    bundles = sorted((work / "out").glob("*.zip"))
    assert len(bundles) == 1, proc.stderr
    keys = sorted((work / "out").glob("*.pub.pem"))
    return DemoRun(work / "out", bundles[0], keys[0], proc.returncode, proc.stdout, proc.stderr)
