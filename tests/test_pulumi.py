"""The Pulumi connector: a stack export, the same stack's program under mocks, the Automation
API through a stand-in `pulumi` CLI, and drift against moto's server.

No real Pulumi CLI is available here; the Automation API test puts a small script named
`pulumi` on PATH that answers the three commands the API runs (version, stack select, stack
export) the way the CLI does, so the API code itself is exercised."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.pulumi.normalise import Declared, normalise
from connectors.pulumi.sources import (
    REDACTED,
    StackError,
    automation_export,
    read_export,
    run_program,
)

from aws_moto import ACCOUNT, KEYS, client, env
from demo_aws import seed as seed_account
from helpers import member_json, members, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pulumi"
COMPLIANT_EXPORT = FIXTURES / "contoso-comms-prod.compliant.export.json"
NONCOMPLIANT_EXPORT = FIXTURES / "contoso-comms-prod.noncompliant.export.json"
# Identifiers AWS assigns at deployment: in an export, never in a program run under mocks.
_ASSIGNED = ("resource", "key_id", "arn")
# References to a key are its ARN once deployed, a placeholder under mocks: compare presence.
_KEY_REFERENCES = ("kms_key", "kms_key_id")


def _comparable(declared: Declared) -> dict[str, Any]:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: bool(v) if k in _KEY_REFERENCES else strip(v)
                for k, v in value.items()
                if k not in _ASSIGNED
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {
        "account": strip(declared.account),
        "regions": strip(dict(declared.regions)),
    }


@pytest.mark.parametrize(
    ("program", "export"),
    [("comms-compliant", COMPLIANT_EXPORT), ("comms-noncompliant", NONCOMPLIANT_EXPORT)],
)
def test_the_program_under_mocks_and_its_stack_export_declare_the_same(
    program: str, export: Path
) -> None:
    ran = run_program(FIXTURES / program, "prod", {}, None, 120, None, "us-east-1")
    exported = read_export(export, None, "us-east-1")
    assert ran.name == exported.name == "contoso-comms/prod"
    assert ran.method == "mocks" and exported.method == "export"
    from_program, from_export = normalise(ran.resources), normalise(exported.resources)
    assert _comparable(from_program) == _comparable(from_export)
    # Every section the live connector fills for what the sample declares is there.
    assert set(from_export.account) == {
        "aws.s3.account_public_access_block",
        "aws.s3.buckets",
        "aws.iam.password_policy",
        "aws.cloudtrail.trails",
    }
    assert set(from_export.regions["us-east-1"]) == {
        "aws.ses.configuration_sets",
        "aws.ses.event_destinations",
        "aws.ses.identities",
        "aws.kms.keys",
        "aws.sns.topics",
        "aws.logs.log_groups",
    }


def test_declared_sections_have_the_live_shapes() -> None:
    declared = normalise(read_export(COMPLIANT_EXPORT, None, "us-east-1").resources)
    buckets = {b["name"]: b for b in declared.account["aws.s3.buckets"]["buckets"]}
    archive = buckets["contoso-phi-archive"]
    assert archive["encryption"]["algorithm"] == "aws:kms"
    assert archive["encryption"]["kms_key"].startswith("arn:aws:kms:us-east-1:")
    assert archive["versioning"] == "Enabled"
    assert archive["public_access_block"] == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    assert archive["declared"] is True and archive["resource"].startswith("urn:pulumi:prod::")
    (key,) = declared.regions["us-east-1"]["aws.kms.keys"]["keys"]
    assert key["rotation_enabled"] is True and key["key_id"]
    policy = declared.account["aws.iam.password_policy"]
    assert (policy["minimum_length"], policy["reuse_prevention"]) == (14, 24)  # floats on the wire


def test_secrets_in_an_export_never_reach_the_evidence(tmp_path: Path) -> None:
    document = json.loads(COMPLIANT_EXPORT.read_text())
    # As `pulumi stack export --show-secrets` (what the Automation API runs) writes a secret.
    secret = "smtp-Pa55word-do-not-leak"
    stack = document["deployment"]["resources"][0]
    stack["outputs"]["sesSmtpPassword"] = {
        "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
        "plaintext": json.dumps(secret),
    }
    export = tmp_path / "shown.json"
    export.write_text(json.dumps(document))
    state = read_export(export, None, "us-east-1")
    assert secret in state.secrets
    assert state.evidence["deployment"]["resources"][0]["outputs"]["sesSmtpPassword"] == REDACTED
    assert "salt" not in json.dumps(state.evidence["deployment"]["secrets_providers"])

    bundle = _audit(tmp_path, f'stacks = [{{export = "{export}"}}]\n')[2]
    everything = b"".join(members(bundle).values())
    assert secret.encode() not in everything
    assert b"c2VjcmV0LWNpcGhlcnRleHQtb2YtdGhlLXNtdHA=" not in everything  # not even ciphertext
    assert "raw/pulumi/contoso-comms/prod/stack-export.json" in members(bundle)


def _audit(
    tmp_path: Path, pulumi: str, aws: str = "", keys: dict[str, str] = KEYS
) -> tuple[int, dict[tuple[str, str], dict[str, Any]], Path, str]:
    config = tmp_path / "commsaudit.toml"
    config.write_text(
        f"[pulumi]\n{pulumi}{aws}"
        '[evidence]\nout = "out"\n[policies]\ncontrols = ["aws.*", "pulumi.*"]\n'
    )
    proc = run_cli(
        "audit", "--config", config, "--format", "json", cwd=tmp_path, env=env(tmp_path, keys)
    )
    results = {}
    if proc.stdout.strip():
        results = {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}
    bundles = sorted((tmp_path / "out").glob("*.zip"))
    return proc.returncode, results, bundles[-1] if bundles else tmp_path, proc.stderr


def test_the_noncompliant_export_fails_the_aws_controls_as_declared(tmp_path: Path) -> None:
    code, results, bundle, stderr = _audit(
        tmp_path, f'stacks = [{{export = "{NONCOMPLIANT_EXPORT}"}}]\n'
    )
    assert code == 1, stderr
    stack, region = "pulumi:contoso-comms/prod", "pulumi:contoso-comms/prod/us-east-1"
    status = {(c, s): r["status"] for (c, s), r in results.items()}
    assert status[("aws.ses.tls-required", region)] == "fail"
    assert status[("aws.s3.encryption", stack)] == "fail"
    assert status[("aws.cloudtrail.multi-region-logging", stack)] == "fail"
    assert status[("aws.kms.rotation", region)] == "fail"
    assert status[("aws.iam.password-policy", stack)] == "fail"
    assert status[("aws.sns.topics-encrypted", region)] == "pass"
    # What a stack cannot declare is not applicable, with the reason.
    assert status[("aws.iam.root-mfa", stack)] == "not_applicable"
    assert "root user's MFA" in results[("aws.iam.root-mfa", stack)]["reason"]
    tls = results[("aws.ses.tls-required", region)]
    (evidence,) = [e for e in tls["evidence"] if e["pointer"].endswith("/tls_policy")]
    assert evidence["value"] == "OPTIONAL"
    assert evidence["source"] == "pulumi:export contoso-comms/prod"
    # Without a live account, drift cannot be judged: not applicable, never pass.
    drift = results[("pulumi.declared-matches-live", "contoso-comms/prod")]
    assert drift["status"] == "not_applicable" and "no live AWS account" in drift["reason"]
    manifest = member_json(bundle, "manifest.json")
    assert "contoso-comms/prod" in json.dumps(manifest["scope"])


def _drift_audit(tmp_path: Path, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    program = FIXTURES / "comms-compliant"
    _, results, bundle, stderr = _audit(
        tmp_path,
        f'stacks = [{{program = "{program}", stack = "prod"}}]\n',
        aws=f'[aws]\nendpoint_url = "{url}"\nregions = ["us-east-1"]\nmax_attempts = 1\n',
    )
    drift = results[("pulumi.declared-matches-live", "contoso-comms/prod")]
    section = next(
        s for s in member_json(bundle, "snapshot.json")["sections"] if s["name"] == "pulumi.drift"
    )
    assert section["data"] is not None, stderr
    return drift, section["data"]


def test_a_declared_require_with_a_live_optional_fails_drift(moto: str, tmp_path: Path) -> None:
    seed_account(moto, "OPTIONAL")
    drift, data = _drift_audit(tmp_path, moto)
    assert drift["status"] == "fail", drift["reason"]
    assert data["live_account"] == ACCOUNT
    (difference,) = data["differences"]
    assert difference == {
        "section": "aws.ses.configuration_sets",
        "resource": "phi-notices",
        "declared_subject": "pulumi:contoso-comms/prod/us-east-1",
        "live_subject": f"{ACCOUNT}/us-east-1",
        "setting": "tls_policy",
        "declared": "REQUIRE",
        "live": "OPTIONAL",
        "matches": False,
    }
    # moto has no GetConfigurationSetEventDestinations: that comparison is listed as not made.
    assert any("aws.ses.event_destinations" in n for n in data["not_compared"])
    # A key has no id before deployment, so a program's key cannot be matched to a live one.
    assert any("aws.kms.keys" in n for n in data["not_compared"])
    assert data["settings_compared"] > 10
    (evidence,) = drift["evidence"]  # the one difference, with the whole record as context
    assert evidence["pointer"] == "/differences/0/matches"
    assert evidence["context"]["resource"] == "phi-notices"
    assert evidence["context"]["live"] == "OPTIONAL"


def test_when_nothing_differs_but_a_live_section_is_unread_drift_is_error(
    moto: str, tmp_path: Path
) -> None:
    seed_account(moto, "REQUIRE")
    drift, data = _drift_audit(tmp_path, moto)
    assert data["differences"] == []
    # The event destinations could not be read live (moto), so a pass would be a guess.
    assert drift["status"] == "error"
    assert "aws.ses.event_destinations" in drift["reason"]


def test_a_declared_resource_missing_live_is_drift(moto: str, tmp_path: Path) -> None:
    seed_account(moto, "REQUIRE")
    client(moto, "logs").delete_log_group(logGroupName="/phi/app")
    drift, data = _drift_audit(tmp_path, moto)
    assert drift["status"] == "fail"
    assert {
        (d["section"], d["resource"], d["setting"], d["live"]) for d in data["differences"]
    } == {("aws.logs.log_groups", "/phi/app", "(exists)", False)}


def _fake_pulumi_cli(directory: Path, export: Path, log: Path) -> None:
    script = directory / "pulumi"
    script.write_text(
        f"""#!{sys.executable}
import sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open({str(log)!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:1] == ["version"]:
    print("v3.200.0")
elif args[:2] == ["stack", "export"]:
    if "--stack" in args and args[args.index("--stack") + 1] != "prod":
        sys.stderr.write("error: no stack named 'nope' found\\n")
        sys.exit(255)
    sys.stdout.write(open({str(export)!r}).read())
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_automation_api_exports_the_selected_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _fake_pulumi_cli(bin_dir, COMPLIANT_EXPORT, log)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_SKIP_UPDATE_CHECK", "true")
    state = automation_export(FIXTURES / "comms-compliant", "prod", None, "us-east-1")
    assert state.method == "automation" and state.name == "contoso-comms/prod"
    assert _comparable(normalise(state.resources)) == _comparable(
        normalise(read_export(COMPLIANT_EXPORT, None, "us-east-1").resources)
    )
    calls = log.read_text().splitlines()
    assert any(c.startswith("stack export") and "--stack prod" in c for c in calls), calls
    # Only reads: nothing that changes a stack was run.
    verbs = {tuple(c.split()[:2]) for c in calls}
    assert verbs <= {("version",), ("stack", "select"), ("stack", "export")}, calls
    with pytest.raises(StackError, match="could not export stack 'nope'"):
        automation_export(FIXTURES / "comms-compliant", "nope", None, "us-east-1")


def test_without_the_cli_the_automation_api_says_what_to_use_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="the Pulumi CLI is not installed") as caught:
        automation_export(FIXTURES / "comms-compliant", "prod", None, "us-east-1")
    assert "export = FILE" in str(caught.value) and "program = DIR" in str(caught.value)


def test_a_broken_program_is_an_error_naming_the_problem(tmp_path: Path) -> None:
    program = tmp_path / "broken"
    program.mkdir()
    (program / "Pulumi.yaml").write_text("name: broken\nruntime: python\n")
    (program / "__main__.py").write_text("raise RuntimeError('bucket name missing')\n")
    _, results, _, stderr = _audit(
        tmp_path, f'stacks = [{{program = "{program}", stack = "dev", name = "broken/dev"}}]\n'
    )
    result = results[("aws.s3.encryption", "pulumi:broken/dev")]
    assert result["status"] == "error", stderr
    assert "failed under mocks" in result["reason"] and "bucket name missing" in result["reason"]
    assert results[("pulumi.declared-matches-live", "broken/dev")]["status"] == "error"


def test_a_stack_needs_exactly_one_source(tmp_path: Path) -> None:
    code, _, _, stderr = _audit(tmp_path, 'stacks = [{stack = "prod"}]\n')
    assert code == 2
    assert "[pulumi] stacks[0]" in stderr and "exactly one of export" in stderr
