"""The smaller commands: keygen, policies, permissions, evaluate, and the exit codes."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import DemoRun
from helpers import member_json, run_cli


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    proc = run_cli("keygen", "--out", tmp_path / "k.pem", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert "fingerprint: sha256:" in proc.stdout
    again = run_cli("keygen", "--out", tmp_path / "k.pem", cwd=tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_audit_signs_with_the_configured_key_and_verify_pins_it(tmp_path: Path) -> None:
    run_cli("keygen", "--out", tmp_path / "k.pem", cwd=tmp_path)
    env = {"COMMSAUDIT_SIGNING_KEY": (tmp_path / "k.pem").read_text()}
    proc = run_cli("audit", "--demo", "--out", tmp_path / "out", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    bundle = next((tmp_path / "out").glob("*.zip"))
    assert not list((tmp_path / "out").glob("*.pub.pem"))  # no throwaway key when one is set
    fingerprint = run_cli("keygen", "--out", tmp_path / "other.pem", cwd=tmp_path).stdout
    assert member_json(bundle, "manifest.json")["signature"]["fingerprint"] not in fingerprint
    ok = run_cli("verify", bundle, "--key", tmp_path / "k.pub.pem", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    wrong = run_cli("verify", bundle, "--key", tmp_path / "other.pub.pem", cwd=tmp_path)
    assert wrong.returncode == 1 and "FAILED SHA256SUMS.sig" in wrong.stderr


def test_policies_list_and_show(tmp_path: Path) -> None:
    listing = run_cli("policies", "list", "--format", "json", "--profile", "hipaa", cwd=tmp_path)
    ids = [p["id"] for p in json.loads(listing.stdout)]
    assert "org.training.current" in ids and "org.compliance-audit.current" not in ids
    shown = run_cli("policies", "show", "org.training.current", cwd=tmp_path)
    assert json.loads(shown.stdout)["id"] == "org.training.current"
    missing = run_cli("policies", "show", "org.nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no control has the id 'org.nope'" in missing.stderr


def test_permissions_lists_each_connector(tmp_path: Path) -> None:
    proc = run_cli("permissions", "--format", "json", cwd=tmp_path)
    data = json.loads(proc.stdout)
    assert data["attestations"]["permissions"]


def test_evaluate_a_snapshot_offline(demo_run: DemoRun, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(member_json(demo_run.bundle, "snapshot.json")))
    proc = run_cli("evaluate", snapshot, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1
    statuses = {r["control"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert statuses["org.training.current"] == "fail"
    # No config: no waiver, so the waived control shows its underlying failure.
    assert statuses["m365.retention.teams"] == "fail"
    nprm = run_cli(
        "evaluate", snapshot, "--profile", "hipaa-nprm-2025", "--format", "json", cwd=tmp_path
    )
    assert "org.compliance-audit.current" in {
        r["control"] for r in json.loads(nprm.stdout)["results"]
    }


# org.training unreadable (error), and a risk analysis five years old (a high failure).
UNREADABLE_TRAINING = {
    "name": "org.training",
    "platform": "org",
    "subject": "Clinic",
    "status": "error",
    "source": "attestations",
    "reason": "file unreadable",
    "data": None,
}
OLD_RISK_ANALYSIS = {
    "name": "org.risk_analysis",
    "platform": "org",
    "subject": "Clinic",
    "status": "ok",
    "source": "attestations",
    "data": {"latest": {"date": "2021-07-30", "performed_by": "x", "age_days": 1900}, "count": 1},
}


def _snapshot_file(tmp_path: Path, *sections: dict[str, object]) -> Path:
    snapshot = {
        "format": "commsaudit/snapshot/v1",
        "scope": {"org": {"organisation": ["Clinic"]}},
        "sections": list(sections),
    }
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    return path


def test_a_control_in_error_and_no_failure_exits_3_unless_errors_are_allowed(
    tmp_path: Path,
) -> None:
    path = _snapshot_file(tmp_path, UNREADABLE_TRAINING)
    judged_nothing = run_cli("evaluate", path, "--controls", "org.training.current", cwd=tmp_path)
    assert judged_nothing.returncode == 3, judged_nothing.stderr
    # --strict is the default now, kept for old workflows: still 3.
    strict = run_cli(
        "evaluate", path, "--controls", "org.training.current", "--strict", cwd=tmp_path
    )
    assert strict.returncode == 3
    allowed = run_cli(
        "evaluate", path, "--controls", "org.training.current", "--allow-errors", "--format",
        "json", cwd=tmp_path,
    )  # fmt: skip
    assert allowed.returncode == 0
    # The error stays in the results even when it does not set the exit code.
    assert json.loads(allowed.stdout)["summary"]["error"] == 1


def test_a_failure_exits_1_even_beside_an_error(tmp_path: Path) -> None:
    path = _snapshot_file(tmp_path, UNREADABLE_TRAINING, OLD_RISK_ANALYSIS)
    both = "org.training.current,org.risk-analysis.current"
    proc = run_cli("evaluate", path, "--controls", both, "--format", "json", cwd=tmp_path)
    statuses = {r["control"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert statuses == {"org.training.current": "error", "org.risk-analysis.current": "fail"}
    assert proc.returncode == 1


@pytest.mark.parametrize(
    ("fail_on", "allow_errors", "expected"),
    [("any", False, 1), ("high", False, 1), ("critical", False, 3), ("critical", True, 0)],
)
def test_fail_on_narrows_the_failures_that_count_but_never_hides_an_error(
    tmp_path: Path, fail_on: str, allow_errors: bool, expected: int
) -> None:
    from auditor.commands import _audit_exit_code
    from auditor.results import Results

    path = _snapshot_file(tmp_path, UNREADABLE_TRAINING, OLD_RISK_ANALYSIS)
    both = "org.training.current,org.risk-analysis.current"
    proc = run_cli("evaluate", path, "--controls", both, "--format", "json", cwd=tmp_path)
    outcome = SimpleNamespace(results=Results.from_json(json.loads(proc.stdout)), diff=None)
    args = SimpleNamespace(fail_on=fail_on, allow_errors=allow_errors)
    assert _audit_exit_code(outcome, args) == expected  # type: ignore[arg-type]


def test_controls_filter_by_glob(tmp_path: Path) -> None:
    proc = run_cli(
        "audit", "--demo", "--controls", "m365.exo.*,org.risk*", "--format", "json",
        "--out", tmp_path, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0
    controls = {r["control"] for r in json.loads(proc.stdout)["results"]}
    assert {"org.risk-analysis.current", "m365.exo.smtp-auth-disabled"} <= controls
    assert all(c.startswith("m365.exo.") or c == "org.risk-analysis.current" for c in controls)


def test_no_color_is_honoured(tmp_path: Path) -> None:
    proc = run_cli("audit", "--demo", "--out", tmp_path, cwd=tmp_path, env={"NO_COLOR": "1"})
    assert "\x1b[" not in proc.stderr


def test_a_bundle_read_for_one_profile_says_how_to_evaluate_another(tmp_path: Path) -> None:
    # A hipaa run reads no Teams or Defender setting: evaluated under scuba, those controls are
    # errors that say why and what to do; a --read-all run's snapshot judges them all.
    for name, extra in (("planned", ()), ("whole", ("--read-all",))):
        out = tmp_path / name
        run_cli("audit", "--demo", *extra, "--out", out, cwd=tmp_path)
        (bundle,) = out.glob("*.zip")
        snapshot = out / "snapshot.json"
        snapshot.write_bytes(zipfile.ZipFile(bundle).read("snapshot.json"))
        proc = run_cli("evaluate", snapshot, "--profile", "scuba", "--format", "json", cwd=out)
        errors = [r for r in json.loads(proc.stdout)["results"] if r["status"] == "error"]
        if name == "planned":
            teams = [r for r in errors if r["control"].startswith("m365.teams.")]
            assert teams and all("--read-all" in r["reason"] for r in teams), teams[:1]
        else:
            assert errors == []
