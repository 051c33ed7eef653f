"""The CrossGuard policy pack: written by `commsaudit pulumi policy-pack`, its validation
functions called directly with pulumi_policy's own argument types (no Pulumi CLI here, and no
policy pack server is started)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import PolicyProviderResource, PolicyResource, StackValidationArgs

from auditor.crossguard import make_validator, pack_parameters, pack_policies
from auditor.resources import policies_dir

from helpers import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pulumi"
PLANTED = {
    "aws.ses.tls-required",
    "aws.s3.encryption",
    "aws.cloudtrail.multi-region-logging",
    "aws.kms.rotation",
    "aws.iam.password-policy",
}


def _preview(export: Path) -> list[PolicyResource]:
    """The export's resources as `pulumi preview` hands them to a policy pack."""
    resources = json.loads(export.read_text())["deployment"]["resources"]
    provider = next(r for r in resources if r["type"] == "pulumi:providers:aws")
    provider_resource = PolicyProviderResource(
        provider["type"], provider["inputs"], provider["urn"], "default"
    )
    return [
        PolicyResource(
            resource_type=r["type"],
            props=r.get("outputs") or {},
            urn=r["urn"],
            name=r["urn"].rsplit("::", 1)[-1],
            opts=None,  # type: ignore[arg-type]
            provider=provider_resource,
            parent=None,
            dependencies=[],
            property_dependencies={},
        )
        for r in resources
        if r.get("custom") and not r["type"].startswith("pulumi:")
    ]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pack")
    proc = run_cli("pulumi", "policy-pack", directory / "pack", cwd=directory)
    assert proc.returncode == 0, proc.stderr
    assert "12 mandatory controls" in proc.stdout
    return directory / "pack"


def _violations(pack: Path, export: Path) -> dict[str, list[tuple[str, str | None]]]:
    policies = pack_policies(pack / "policies", "hipaa")
    args = StackValidationArgs(_preview(export))
    found: dict[str, list[tuple[str, str | None]]] = {}
    for policy in policies:
        reported: list[tuple[str, str | None]] = []

        def report(message: str, urn: str | None = None, into: Any = reported) -> None:
            into.append((message, urn))

        make_validator(policies, policy.id, "hipaa", pack_parameters(pack))(args, report)
        if reported:
            found[policy.id] = reported
    return found


def test_the_pack_holds_the_aws_policies_and_a_runnable_entry_point(pack: Path) -> None:
    assert (pack / "PulumiPolicy.yaml").read_text().startswith("runtime: python")
    main = (pack / "__main__.py").read_text()
    compile(main, str(pack / "__main__.py"), "exec")  # valid Python (not run: it would serve)
    assert "EnforcementLevel.MANDATORY" in main and "StackValidationPolicy" in main
    shipped = sorted(p.name for p in (pack / "policies").iterdir())
    assert "aws.ses.tls-required.json" in shipped
    assert not [n for n in shipped if not n.startswith("aws.")]
    assert "pulumi-policy" in (pack / "requirements.txt").read_text()


def test_the_validators_reject_the_noncompliant_sample(pack: Path) -> None:
    found = _violations(pack, FIXTURES / "contoso-comms-prod.noncompliant.export.json")
    assert set(found) == PLANTED
    (message, urn) = found["aws.ses.tls-required"][0]
    assert "OPTIONAL" in message
    assert urn is not None and urn.endswith("ConfigurationSet::phi-notices")
    (message, urn) = found["aws.kms.rotation"][0]
    assert urn is not None and urn.endswith("aws:kms/key:Key::phi")


def test_the_validators_pass_the_compliant_sample(pack: Path) -> None:
    assert _violations(pack, FIXTURES / "contoso-comms-prod.compliant.export.json") == {}


def test_a_pack_is_not_written_over_unrelated_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_cli("pulumi", "policy-pack", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "is not empty and holds no policy pack" in proc.stderr


def test_the_pack_enforces_the_configs_own_policies(tmp_path: Path) -> None:
    """With --config, the user's [policies] paths override the shipped policies in the pack,
    as they do in an audit: here a stricter log retention (800 days) that the compliant sample
    (400 days) does not meet."""
    mine = tmp_path / "mine"
    mine.mkdir()
    shipped = json.loads((policies_dir() / "aws.logs.retention.json").read_text())
    text = json.dumps(shipped).replace('"minimum": 365', '"minimum": 800')
    assert text != json.dumps(shipped)
    (mine / "aws.logs.retention.json").write_text(text)
    (tmp_path / "commsaudit.toml").write_text('[policies]\npaths = ["mine"]\n')
    proc = run_cli("pulumi", "policy-pack", "pack", "--config", "commsaudit.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pack = tmp_path / "pack"
    assert '"minimum": 800' in (pack / "policies" / "aws.logs.retention.json").read_text()
    found = _violations(pack, FIXTURES / "contoso-comms-prod.compliant.export.json")
    assert set(found) == {"aws.logs.retention"}
    (message, urn) = found["aws.logs.retention"][0]
    assert "400" in message and urn is not None and urn.endswith("LogGroup::/phi/app")
