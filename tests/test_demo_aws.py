"""The demo's recorded AWS account is what the AWS connector records today from the same
account on moto's server (tests/demo_aws.py), so the demo never drifts from the connector."""

from __future__ import annotations

import json
from pathlib import Path

from demo_aws import TARGET, comparable, record, seed


def test_the_demo_recording_is_what_the_connector_records(moto: str, tmp_path: Path) -> None:
    seed(moto)
    fresh = record(moto, tmp_path)
    kept = json.loads(TARGET.read_text(encoding="utf-8"))
    assert comparable(fresh) == comparable(kept), (
        "fixtures/demo/contoso-health/recorded-sections.json is out of date: "
        "run `python tests/demo_aws.py`"
    )


def test_the_demo_shows_live_declared_and_drift(demo_run) -> None:  # type: ignore[no-untyped-def]
    results = {(r["control"], r["subject"]): r for r in demo_run.results["results"]}
    live, declared = "123456789012/us-east-1", "pulumi:contoso-comms/prod/us-east-1"
    assert results[("aws.ses.tls-required", live)]["status"] == "fail"
    assert results[("aws.ses.tls-required", declared)]["status"] == "pass"
    drift = results[("pulumi.declared-matches-live", "contoso-comms/prod")]
    assert drift["status"] == "fail"
    (evidence,) = drift["evidence"]
    assert evidence["context"]["resource"] == "phi-notices"
    assert (evidence["context"]["declared"], evidence["context"]["live"]) == ("REQUIRE", "OPTIONAL")
    assert results[("provider.aws.baa", "123456789012")]["status"] == "inherited"
