"""Recorded sections, replayed in an audit or evaluated from a snapshot file: only data its
section can hold as this version writes it is judged; anything else is `error`, saying why."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import TRAINING_REPLAY, run_cli, training_snapshot


def _audit(tmp_path: Path) -> tuple[int, dict[str, object]]:
    (tmp_path / "commsaudit.toml").write_text(TRAINING_REPLAY)
    proc = run_cli("-q", "audit", "--format", "json", "--out", "out", cwd=tmp_path)
    result = json.loads(proc.stdout)["results"][0]
    return proc.returncode, result


def test_a_recorded_section_of_its_sections_shape_is_judged(tmp_path: Path) -> None:
    training_snapshot(tmp_path, coverage=0.99)
    code, result = _audit(tmp_path)
    assert (code, result["status"]) == (0, "pass")


def test_data_its_section_could_never_hold_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    """As from an older version that did not record a field, or edited by hand: here the
    training section without the record count this version always writes, and with a member
    it never writes. The control's own schema would pass it."""
    path = training_snapshot(tmp_path, coverage=0.99)
    document = json.loads(path.read_text())
    data = document["sections"][0]["data"]
    del data["count"]
    data["required_coverage"] = 0.5
    path.write_text(json.dumps(document))
    code, result = _audit(tmp_path)
    assert (code, result["status"]) == (3, "error")
    reason = str(result["reason"])
    assert "is not data org.training can hold as this version of commsaudit writes it" in reason
    assert '"count" is a required property' in reason
    assert "'required_coverage' was unexpected" in reason
    assert reason.endswith("record the section again")


def test_evaluating_a_snapshot_holds_its_data_to_the_same_shapes(tmp_path: Path) -> None:
    path = training_snapshot(tmp_path, coverage=0.99)
    document = json.loads(path.read_text())
    del document["sections"][0]["data"]["count"]
    path.write_text(json.dumps(document))
    args = ("evaluate", path, "--controls", "org.training.current", "--format", "json")
    proc = run_cli("-q", *args, cwd=tmp_path)
    result = json.loads(proc.stdout)["results"][0]
    assert (proc.returncode, result["status"]) == (3, "error")
    assert "the snapshot's data is not data org.training can hold" in result["reason"]


def test_a_refusal_quotes_at_most_a_little_of_the_offending_value(tmp_path: Path) -> None:
    """The validator quotes what it refuses whole: a megabyte string stays out of every report."""
    path = training_snapshot(tmp_path, coverage=0.99)
    document = json.loads(path.read_text())
    document["sections"][0]["data"]["latest"]["date"] = "x" * 1_000_000
    path.write_text(json.dumps(document))
    code, result = _audit(tmp_path)
    assert (code, result["status"]) == (3, "error")
    assert len(str(result["reason"])) < 2000, len(str(result["reason"]))
