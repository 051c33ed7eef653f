"""Broken inputs stop the run with one line a person can act on, and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from auditor.resources import policies_dir

from helpers import run_cli

ATTESTATIONS = """\
organisation: Example Clinic
risk_analyses:
  - date: 2026-05-01
    performed_by: Security team
trainings:
  - date: 2026-13-01
    workforce: 10
    completed: 10
"""


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_policy_with_a_broken_schema(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    source = policies_dir() / "org.risk-analysis.current.json"
    document = json.loads(source.read_text())
    document["schema"]["properties"]["latest"]["type"] = "objekt"
    (policies / "org.risk-analysis.current.json").write_text(json.dumps(document, indent=2))
    (tmp_path / "attestations.yaml").write_text(ATTESTATIONS.replace("2026-13-01", "2026-09-01"))
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n[policies]\npaths = ["policies"]\n'
    )
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "org.risk-analysis.current.json" in lines[0]
    assert "/schema/properties/latest/type" in lines[0]
    assert "not a valid JSON Schema" in lines[0]
    assert "Traceback" not in proc.stderr


def test_policies_lint_names_each_broken_file(tmp_path: Path) -> None:
    shutil.copy(policies_dir() / "org.training.current.json", tmp_path)
    (tmp_path / "bad-json.json").write_text('{"id": ')
    document = json.loads((policies_dir() / "org.incident-response.reviewed.json").read_text())
    del document["remediation"]
    document["schema"]["properties"]["latest"]["$ref"] = "https://example.com/remote.json"
    (tmp_path / "org.incident-response.reviewed.json").write_text(json.dumps(document))
    proc = run_cli("policies", "lint", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2
    out = proc.stdout
    assert "bad-json.json:1:8: invalid JSON" in out
    assert (
        "org.incident-response.reviewed.json: (top level): 'remediation' is a required property"
        in out
    )
    assert "org.training.current.json" not in out


def test_attestations_file_with_a_bad_date(tmp_path: Path) -> None:
    (tmp_path / "attestations.yaml").write_text(ATTESTATIONS)
    (tmp_path / "commsaudit.toml").write_text('[attestations]\nfile = "attestations.yaml"\n')
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "attestations.yaml:6" in lines[0]
    assert "trainings[0].date" in lines[0]
    assert "'2026-13-01' is not a valid date (expected YYYY-MM-DD)" in lines[0]


def test_config_with_an_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text('[evidence]\nout = "x"\nsigning_key_fil = "k.pem"\n')
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "commsaudit.toml" in lines[0]
    assert "unknown key 'signing_key_fil' in [evidence]" in lines[0]
    assert "did you mean 'signing_key_file'?" in lines[0]


def test_config_with_an_unknown_section(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text("[m356]\ntenant = 'x'\n")
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown section 'm356' at the top level; did you mean 'm365'?" in proc.stderr


def test_a_pulumi_stack_without_a_source_says_what_to_give(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text("[pulumi]\nstacks = [{stack = 'prod'}]\n")
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "[pulumi] stacks[0]" in proc.stderr
    assert "exactly one of export" in proc.stderr and "found none" in proc.stderr


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text("[evidence]\nout = \n")
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "invalid TOML" in proc.stderr and "line 2" in proc.stderr


def test_waiver_for_an_unknown_control(tmp_path: Path) -> None:
    (tmp_path / "attestations.yaml").write_text(ATTESTATIONS.replace("2026-13-01", "2026-09-01"))
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n'
        '[[waivers]]\ncontrol = "org.training.curent"\nreason = "r"\napproved_by = "a"\n'
        "expires = 2030-01-01\n"
    )
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "[[waivers]] #1 (org.training.curent): no control has the id" in proc.stderr


def test_missing_config_file_suggests_the_demo(tmp_path: Path) -> None:
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "commsaudit audit --demo" in proc.stderr


def test_unknown_profile(tmp_path: Path) -> None:
    proc = run_cli("audit", "--demo", "--profile", "hippa", "--out", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown profile 'hippa'" in proc.stderr


def test_a_skip_that_matches_no_control_is_a_typo_not_a_silent_no_op(tmp_path: Path) -> None:
    # The control meant would still run while the user believes it left out.
    (tmp_path / "attestations.yaml").write_text(ATTESTATIONS.replace("2026-13-01", "2026-09-01"))
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n'
        '[policies]\nskip_controls = ["org.training.curent"]\n'
    )
    from_config = run_cli("audit", cwd=tmp_path)
    assert from_config.returncode == 2
    assert (
        "[policies] skip_controls: 'org.training.curent' matches no control; "
        "did you mean 'org.training.current'?"
    ) in from_config.stderr
    (tmp_path / "commsaudit.toml").write_text('[attestations]\nfile = "attestations.yaml"\n')
    from_flag = run_cli("audit", "--skip-controls", "org.risk-analysys.*", cwd=tmp_path)
    assert from_flag.returncode == 2
    assert "--skip-controls: 'org.risk-analysys.*' matches no control" in from_flag.stderr
    good = run_cli("audit", "--skip-controls", "org.risk-analysis.*", cwd=tmp_path)
    assert good.returncode != 2, good.stderr
