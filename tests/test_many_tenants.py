"""An MSP's config: several tenants in one run ([[m365]] twice), collected concurrently, each
with its own subjects, sources and raw answers."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.m365.sandbox.server import Sandbox

from helpers import member_json, members, run_cli

TENANTS = Path(__file__).resolve().parents[1] / "fixtures" / "tenants"


def test_two_tenants_in_one_run(tmp_path: Path) -> None:
    with (
        Sandbox(TENANTS / "contoso-health") as contoso,
        Sandbox(TENANTS / "fabrikam-clinic") as fabrikam,
    ):
        config = "".join(
            sandbox.config_toml("certificate").replace("[m365]", "[[m365]]", 1)
            for sandbox in (contoso, fabrikam)
        )
        (tmp_path / "commsaudit.toml").write_text(
            config + '[policies]\ncontrols = ["m365.*"]\n[evidence]\nout = "out"\n'
        )
        proc = run_cli("audit", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # fabrikam fails plenty
    results = json.loads(proc.stdout)["results"]
    by_tenant: dict[str, dict[str, str]] = {}
    for result in results:
        by_tenant.setdefault(result["subject"], {})[result["control"]] = result["status"]
    assert set(by_tenant) == {"contoso-health.onmicrosoft.com", "fabrikamclinic.onmicrosoft.com"}
    assert by_tenant["contoso-health.onmicrosoft.com"]["m365.exo.smtp-auth-disabled"] == "pass"
    assert by_tenant["fabrikamclinic.onmicrosoft.com"]["m365.exo.smtp-auth-disabled"] == "fail"

    (bundle,) = (tmp_path / "out").glob("*.zip")
    snapshot = member_json(bundle, "snapshot.json")
    assert {name: source["status"] for name, source in snapshot["sources"].items()} == {
        "m365": "ok",
        "m365-2": "ok",
    }
    assert snapshot["scope"]["m365"]["tenant"] == [
        "contoso-health.onmicrosoft.com",
        "fabrikamclinic.onmicrosoft.com",
    ]
    # Each tenant's answers are kept apart, and each section cites its own tenant's answers.
    names = set(members(bundle))
    assert "raw/m365/tenant.json" in names and "raw/m365-2/m365/tenant.json" in names
    for section in snapshot["sections"]:
        if section["subject"] == "fabrikamclinic.onmicrosoft.com" and section["raw"]:
            assert all(path.startswith("raw/m365-2/") for path in section["raw"]), section["name"]
    assert run_cli("verify", bundle, cwd=tmp_path).returncode == 0


def test_a_connector_that_is_not_repeatable_says_so(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text(
        '[[attestations]]\nfile = "a.yaml"\n[[attestations]]\nfile = "b.yaml"\n'
    )
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "[[attestations]] can appear only once" in proc.stderr


def test_a_second_table_with_a_typo_is_named(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text(
        '[[aws]]\nregions = ["us-east-1"]\n[[aws]]\nregoins = ["us-west-2"]\n'
    )
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "[[aws]] #2: unknown key 'regoins' in [aws]; did you mean 'regions'?" in proc.stderr


def test_a_run_past_its_deadline_still_writes_a_signed_bundle(tmp_path: Path) -> None:
    """One slow tenant: the run ends at its deadline, the unfinished tenant's controls are
    error (never pass), the finished one is judged, and the bundle is written and signed."""
    from connectors.m365.sandbox.server import Faults

    key = tmp_path / "signing.pem"
    assert run_cli("keygen", "--out", key, cwd=tmp_path).returncode == 0
    with (
        Sandbox(TENANTS / "contoso-health") as fast,
        Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(latency_ms=3000)) as slow,
    ):
        config = "".join(
            s.config_toml("certificate").replace("[m365]", "[[m365]]", 1) for s in (fast, slow)
        )
        (tmp_path / "commsaudit.toml").write_text(
            config
            + '[policies]\ncontrols = ["m365.exo.*"]\n'
            + f'[evidence]\nout = "out"\nsigning_key_file = "{key}"\n'
        )
        proc = run_cli("audit", "--format", "json", "--timeout", "8", cwd=tmp_path)
    assert proc.returncode in (1, 3), proc.stderr  # a control in error never leaves the run at 0
    results = json.loads(proc.stdout)["results"]
    # Stopped before it learnt the tenant's domain: named by the tenant id from the config.
    slow_results = [r for r in results if r["subject"] == slow.tenant.tenant_id]
    fast_results = [r for r in results if r["subject"] == "contoso-health.onmicrosoft.com"]
    assert slow_results and all(r["status"] == "error" for r in slow_results)
    assert (
        "Microsoft 365 (m365-2) failed: did not finish within the run's deadline"
        in (slow_results[0]["reason"])
    )
    assert fast_results and all(r["status"] in ("pass", "fail") for r in fast_results)
    (bundle,) = (tmp_path / "out").glob("*.zip")
    verified = run_cli("verify", bundle, "--key", key.with_suffix(".pub.pem"), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_record_writes_every_tenant_of_the_run(tmp_path: Path) -> None:
    """`commsaudit record` with [[m365]] twice: both tenants are written out, and each table's
    break-glass accounts are renamed with that tenant's own pseudonyms."""
    with (
        Sandbox(TENANTS / "fabrikam-clinic") as fabrikam,
        Sandbox(TENANTS / "contoso-health") as contoso,
    ):
        glass = 'break_glass_accounts = ["breakglass01@contoso-health.onmicrosoft.com"]\n'
        config = fabrikam.config_toml("certificate").replace("[m365]", "[[m365]]", 1)
        config += contoso.config_toml("certificate").replace("[m365]", "[[m365]]", 1) + glass
        (tmp_path / "commsaudit.toml").write_text(
            config + '[policies]\ncontrols = ["m365.*"]\n[evidence]\nout = "out"\n'
        )
        proc = run_cli("record", "--tenants", "recorded", "--pseudonymise", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    recorded = tmp_path / "recorded"
    assert sorted(p.name for p in recorded.iterdir()) == [
        "contoso-health.onmicrosoft.com",
        "fabrikamclinic.onmicrosoft.com",
    ]
    for tenant in recorded.iterdir():
        assert (tenant / "tenant.json").is_file()
        assert (tenant / "exo" / "Get-Mailbox.json").is_file()
    contoso_users = recorded / "contoso-health.onmicrosoft.com" / "graph/v1.0/users.json"
    assert "breakglass01@" not in contoso_users.read_text()
    # The renamed break-glass account is printed, and it is one of contoso's users.
    line = next(x for x in proc.stderr.splitlines() if x.startswith("break_glass_accounts"))
    renamed = line.split("'")[1]
    assert renamed in contoso_users.read_text()
