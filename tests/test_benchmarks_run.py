"""The benchmarks still run and still measure what they say, on tiny inputs. No timing is
asserted: the figures are for people to read."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def _bench(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dns_posture_benchmark_reads_every_generated_domain() -> None:
    out = _bench(
        "dns_posture.py", "--domains", "20", "--latency-ms", "0", "--checkdmarc-domains", "0"
    )
    assert "MTA-STS enforce read: 10 of 10" in out
    assert "sections in error:    0" in out
    assert "domains/s" in out


def test_m365_benchmark_collects_the_generated_tenant_without_errors() -> None:
    out = _bench(
        "m365_large_tenant.py",
        "--users",
        "300",
        "--mailboxes",
        "100",
        "--policies",
        "5",
        "--latency-ms",
        "0",
    )
    assert "sections in error: 0" in out
    assert "requests made:" in out
    # The whole command ran too, and its manifest said where the time went.
    assert "the whole command: commsaudit audit --profile hipaa" in out
    assert "phases:            startup " in out and " collect " in out and "redaction " in out


def test_engine_benchmark_evaluates_generated_users() -> None:
    out = _bench("engine_throughput.py", "--users", "1000", "--repeat", "1")
    assert out.startswith("1,000 user records")
    rows = [line.split() for line in out.splitlines() if line.startswith("jsonschema")]
    evidence = {(row[0], " ".join(row[1:-3])): row[-1] for row in rows}
    # Both validators find the same failures in each case: nothing passes that should fail.
    for case in ("all pass", "1 in 7 unregistered"):
        assert evidence[("jsonschema", case)] == evidence[("jsonschema-rs", case)]
    assert evidence[("jsonschema", "all pass")] == "1"
    assert int(evidence[("jsonschema", "1 in 7 unregistered")]) > 1
