from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aws_moto import post
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


ScubaDemo = Callable[[str], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def scuba_demo(tmp_path_factory: pytest.TempPathFactory) -> ScubaDemo:
    """`commsaudit audit --demo NAME --profile scuba --format json`'s results, each sample
    organisation run once for the session (a run takes seconds; many tests read it)."""
    runs: dict[str, list[dict[str, Any]]] = {}

    def results(demo: str) -> list[dict[str, Any]]:
        if demo not in runs:
            work = tmp_path_factory.mktemp(f"scuba-{demo}")
            done = run_cli(
                "audit", "--demo", demo, "--profile", "scuba", "--out", work / "out",
                "--format", "json", cwd=work,
            )  # fmt: skip
            assert done.returncode in (0, 1), done.stderr  # judged, whatever the verdicts
            runs[demo] = json.loads(done.stdout)["results"]
        return runs[demo]

    return results


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture()
def moto(moto_url: str) -> str:
    """The server, emptied (and with IAM checks off) for this test."""
    post(moto_url, "/moto-api/reset", b"")
    post(moto_url, "/moto-api/reset-auth", b"inf")
    return moto_url


@pytest.fixture(scope="session")
def fabrikam_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`commsaudit audit --demo fabrikam-clinic`, run once: the second sample's bundle."""
    work = tmp_path_factory.mktemp("fabrikam")
    proc = run_cli("audit", "--demo", "fabrikam-clinic", "--out", work / "out", cwd=work)
    assert proc.returncode == 1, proc.stderr
    (bundle,) = (work / "out").glob("*.zip")
    return bundle
