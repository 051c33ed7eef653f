"""`commsaudit init`'s content (auditor/scaffold.py): the starter files are valid as written,
are never overwritten by accident, and the printed setup steps run as bash and say exactly
what to trust."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.config import load_config
from auditor.errors import ConfigError
from auditor.scaffold import (
    ATTESTATIONS_FILE,
    CONFIG_FILE,
    WORKFLOW_FILE,
    StarterExistsError,
    setup_steps,
    trust_policy,
    write_starter,
)
from connectors.attestations import AttestationsConnector
from connectors.base import CollectContext
from connectors.m365.grants import graph_permissions

from helpers import REPO, run_cli
from test_action import VENV_BIN, actionlint, check_workflow, load_file, load_yaml

TENANT = "contoso-health.onmicrosoft.com"
ACCOUNT = "123456789012"
REPOSITORY = "contoso-health/compliance"


def _starter(directory: Path, **overrides: Any) -> list[Path]:
    arguments: dict[str, Any] = {
        "tenant": TENANT,
        "aws_account": ACCOUNT,
        "domains": ["contoso-health.org"],
        "force": False,
    }
    arguments.update(overrides)
    return write_starter(directory, **arguments)


def test_the_starter_files_are_written_and_the_config_loads(tmp_path: Path) -> None:
    written = _starter(tmp_path)
    assert written == [
        tmp_path / CONFIG_FILE,
        tmp_path / ATTESTATIONS_FILE,
        tmp_path / WORKFLOW_FILE,
    ]
    config = load_config(tmp_path / CONFIG_FILE)
    m365 = config.connectors["m365"]
    assert m365["tenant_id"] == TENANT and m365["auth"] == "workload-identity"
    assert "federated_token_file" not in m365  # in GitHub Actions the token is requested
    assert config.connectors["aws"]["regions"] == ["us-east-1"]
    assert config.connectors["dns"] == {"domains": ["contoso-health.org"], "smtp_probe": False}
    assert config.connectors["attestations"] == {"file": ATTESTATIONS_FILE}
    assert config.evidence.require_signature is True
    assert config.evidence.signing_key_env == "COMMSAUDIT_SIGNING_KEY"
    assert config.evidence.out == (tmp_path / "commsaudit-out").resolve()
    assert config.policies.profile == "hipaa"


def test_without_a_tenant_or_account_those_sections_are_left_out(tmp_path: Path) -> None:
    _starter(tmp_path, tenant=None, aws_account=None, domains=[])
    config = load_config(tmp_path / CONFIG_FILE)
    assert set(config.connectors) == {"dns", "attestations"}
    workflow = (tmp_path / WORKFLOW_FILE).read_text()
    assert "configure-aws-credentials" not in workflow


def test_the_attestations_template_passes_the_connectors_validation(tmp_path: Path) -> None:
    _starter(tmp_path)
    now = dt.datetime.now(dt.UTC)
    connector = AttestationsConnector({"file": ATTESTATIONS_FILE}, tmp_path)
    connector.preflight(now)  # raises InputError on any problem, with its line
    ctx = CollectContext(connector="attestations", now=now, deadline=time.monotonic() + 10)
    asyncio.run(connector.collect(ctx))
    sections = {s.name: s.data for s in ctx.sections}
    agreements = sections["org.baa"]["agreements"]
    assert [a["vendor"] for a in agreements] == ["microsoft", "aws"]
    # The examples can never pass for real records: the agreements have expired, the
    # dated records are more than a year old.
    assert not any(a["current"] for a in agreements)
    assert sections["org.risk_analysis"]["latest"]["age_days"] > 365


def test_an_audit_of_the_starter_runs_and_fails_the_org_controls_until_filled_in(
    tmp_path: Path,
) -> None:
    _starter(tmp_path, tenant=None, aws_account=None, domains=[])
    config = tmp_path / CONFIG_FILE
    # require_signature: with no key the audit refuses to write unsigned evidence.
    unsigned = run_cli("audit", "--config", config, "--controls", "org.*", cwd=tmp_path)
    assert unsigned.returncode == 2
    assert "require_signature" in unsigned.stderr

    run_cli("keygen", "--out", tmp_path / "signing.pem", cwd=tmp_path)
    env = {"COMMSAUDIT_SIGNING_KEY": (tmp_path / "signing.pem").read_text()}
    proc = run_cli(
        "audit",
        "--config",
        config,
        "--controls",
        "org.*",
        "--format",
        "json",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr  # ran (not 2), and the examples fail
    results = json.loads(proc.stdout)["results"]
    statuses = {r["control"]: r["status"] for r in results}
    assert "error" not in statuses.values(), proc.stderr
    for control in (
        "org.risk-analysis.current",
        "org.training.current",
        "org.contingency.restore-tested",
        "org.incident-response.reviewed",
    ):
        assert statuses[control] == "fail", (control, statuses)
    assert "pass" not in statuses.values()
    assert list((tmp_path / "commsaudit-out").glob("commsaudit-*.zip"))


def test_existing_files_are_not_overwritten_without_force(tmp_path: Path) -> None:
    _starter(tmp_path)
    config = tmp_path / CONFIG_FILE
    config.write_text("# mine\n")
    with pytest.raises(StarterExistsError) as caught:
        _starter(tmp_path)
    assert set(caught.value.paths) == {
        tmp_path / CONFIG_FILE,
        tmp_path / ATTESTATIONS_FILE,
        tmp_path / WORKFLOW_FILE,
    }
    assert "--force" in str(caught.value)
    assert config.read_text() == "# mine\n"
    _starter(tmp_path, force=True)
    assert config.read_text() != "# mine\n"
    load_config(config)


def test_one_existing_file_stops_the_whole_set(tmp_path: Path) -> None:
    workflow = tmp_path / WORKFLOW_FILE
    workflow.parent.mkdir(parents=True)
    workflow.write_text("name: mine\n")
    with pytest.raises(StarterExistsError) as caught:
        _starter(tmp_path)
    assert caught.value.paths == [workflow]
    assert not (tmp_path / CONFIG_FILE).exists() and not (tmp_path / ATTESTATIONS_FILE).exists()
    assert workflow.read_text() == "name: mine\n"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aws_account": "12345"}, "not an AWS account id"),
        ({"tenant": 'contoso"\nauth = "client-secret'}, "not a tenant id"),
        ({"domains": ["not a domain"]}, "not a mail domain"),
    ],
)
def test_values_that_are_not_what_they_claim_are_refused(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _starter(tmp_path, **overrides)
    assert not any(tmp_path.iterdir())


def test_the_starter_workflow_passes_the_workflow_check(tmp_path: Path) -> None:
    _starter(tmp_path)
    path = tmp_path / WORKFLOW_FILE
    text = path.read_text()
    workflow = load_yaml(text)
    # Its `uses: OWNER/commsaudit@COMMIT_SHA` is this repository's action.yml, once published;
    # the user fills in the owner and the commit of the release they reviewed (never a tag).
    assert check_workflow(workflow, {"OWNER/commsaudit@": load_file(REPO / "action.yml")}) == []
    assert re.search(
        r"# REPLACE OWNER .*\n(\s+#.*\n)+\s+uses: OWNER/commsaudit@COMMIT_SHA # v\S+\n", text
    )
    assert "COMMIT_SHA with the full commit SHA of the release you reviewed" in text
    assert workflow["on"]["schedule"] == [{"cron": "0 6 * * 1"}]
    assert "workflow_dispatch" in workflow["on"]
    assert workflow["permissions"]["id-token"] == "write"
    steps = workflow["jobs"]["audit"]["steps"]
    aws = next(s for s in steps if "configure-aws-credentials" in s.get("uses", ""))
    assert aws["with"]["role-to-assume"] == f"arn:aws:iam::{ACCOUNT}:role/commsaudit-audit"
    previous = next(s for s in steps if "action-download-artifact" in s.get("uses", ""))
    assert previous["with"]["workflow"] == Path(WORKFLOW_FILE).name
    audit = next(s for s in steps if s.get("uses", "").startswith("OWNER/commsaudit@"))
    assert previous["with"]["name"] == audit["with"]["artifact-name"]
    assert audit["with"]["config"] == CONFIG_FILE
    # actionlint, where it is installed, checks it too (the action is remote: its inputs are not).
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    proc = actionlint([path], tmp_path)
    if proc is not None:
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the setup steps ----------------------------------------------------------------------------


def _readme_graph_permissions() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Permissions", 1)[1].split("\n## ", 1)[0]
    listed = section.split("Graph application permissions", 1)[1].split(";", 1)[0]
    return re.findall(r"[A-Z][A-Za-z]+(?:\.[A-Za-z]+)+", listed)


def _quoted_after(text: str, marker: str) -> Any:
    """The single-quoted JSON word that follows `marker` in the steps."""
    start = text.index(marker + "'") + len(marker) + 1
    end = text.index("'", start)
    return json.loads(text[start:end])


def test_the_steps_name_the_federated_credential_and_every_permission() -> None:
    text = setup_steps(TENANT, ACCOUNT, REPOSITORY)
    assert "PowerShell" not in text and "Connect-" not in text and "New-Mg" not in text
    for command in (
        "az ad app create",
        "az ad sp create",
        "az ad app federated-credential create",
        "az ad app permission add",
        "az ad app permission admin-consent",
    ):
        assert command in text, command
    credential = _quoted_after(text, "--parameters ")
    assert credential["issuer"] == "https://token.actions.githubusercontent.com"
    assert credential["subject"] == f"repo:{REPOSITORY}:ref:refs/heads/main"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert graph_permissions() == _readme_graph_permissions()
    for permission in [*graph_permissions(), "Exchange.ManageAsApp"]:
        assert re.search(rf"\b{re.escape(permission)}\b", text), permission
    assert "Global Reader" in text and "f2ef992c-3afb-46b9-b7cf-a126ee74c451" in text


def test_the_trust_policy_and_the_role_policy_are_valid_json(tmp_path: Path) -> None:
    text = setup_steps(TENANT, ACCOUNT, REPOSITORY)
    trust = _quoted_after(text, "--assume-role-policy-document ")
    assert trust == trust_policy(ACCOUNT, REPOSITORY)
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    conditions = statement["Condition"]
    # Only the default branch may assume the role (as for the Entra federated credential).
    assert conditions == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": f"repo:{REPOSITORY}:ref:refs/heads/main",
        }
    }
    # The role's permissions are exactly what `commsaudit permissions` prints.
    printed = json.loads(run_cli("permissions", "--format", "json", cwd=tmp_path).stdout)
    assert _quoted_after(text, "--policy-document ") == printed["aws"]["iam_policy"]


def test_only_the_platforms_asked_for_are_set_up() -> None:
    m365_only = setup_steps(TENANT, None, None)
    assert "az ad app create" in m365_only and "aws iam" not in m365_only
    assert "repo:OWNER/REPO:ref:refs/heads/main" in m365_only
    aws_only = setup_steps(None, ACCOUNT, REPOSITORY)
    assert "aws iam create-role" in aws_only and "az ad" not in aws_only
    with pytest.raises(ConfigError, match="not a GitHub repository"):
        setup_steps(TENANT, None, "not a repo")


_STUB = """\
#!{python}
import json, os, sys
# A stand-in for the real CLI: records its arguments (and standard input for `gh`), and
# prints the ids the steps capture.
log = os.environ["STUB_LOG"]
entry = {{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]]}}
if entry["argv"][0] == "gh":
    entry["stdin"] = sys.stdin.read()
with open(log, "a") as handle:
    handle.write(json.dumps(entry) + "\\n")
args = sys.argv[1:]
if args[:3] == ["ad", "app", "create"]:
    print("11111111-1111-1111-1111-111111111111")
elif args[:3] == ["ad", "sp", "create"]:
    print("22222222-2222-2222-2222-222222222222")
elif args[:3] == ["ad", "sp", "show"]:
    print("33333333-3333-3333-3333-333333333333")
"""


def test_the_steps_run_as_bash_with_every_argument_intact(tmp_path: Path) -> None:
    text = setup_steps(TENANT, ACCOUNT, REPOSITORY)
    # Each step's body is indented bash; the numbered titles are not part of it.
    script = "\n".join(line[3:] for line in text.splitlines() if line.startswith("   "))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("az", "aws", "gh"):
        stub = stubs / name
        stub.write_text(_STUB.format(python=shutil.which("python3", path=str(VENV_BIN))))
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", script],
        cwd=work,
        env={
            **os.environ,
            "PATH": f"{stubs}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(log),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'set client_id = "11111111-1111-1111-1111-111111111111"' in proc.stdout
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    stdin = [json.loads(line).get("stdin") for line in log.read_text().splitlines()]

    def call(*prefix: str) -> list[str]:
        return next(c for c in calls if c[: len(prefix)] == list(prefix))

    def value(argv: list[str], option: str) -> str:
        return argv[argv.index(option) + 1]

    federated = call("az", "ad", "app", "federated-credential", "create")
    assert json.loads(value(federated, "--parameters"))["subject"] == (
        f"repo:{REPOSITORY}:ref:refs/heads/main"
    )
    added = [c for c in calls if c[:4] == ["az", "ad", "app", "permission"] and c[4] == "add"]
    assert len(added) == len(graph_permissions()) + 1  # and Exchange.ManageAsApp
    assert all(
        value(c, "--api-permissions") == "33333333-3333-3333-3333-333333333333=Role" for c in added
    )
    queried = set()
    for argv in calls:
        if argv[:4] == ["az", "ad", "sp", "show"]:
            match = re.search(r"value=='([^']+)'", value(argv, "--query"))
            assert match, argv
            queried.add(match.group(1))
    assert queried == {*graph_permissions(), "Exchange.ManageAsApp"}
    body = json.loads(value(call("az", "rest"), "--body"))
    assert body == {
        "principalId": "22222222-2222-2222-2222-222222222222",
        "roleDefinitionId": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "directoryScopeId": "/",
    }
    role = call("aws", "iam", "create-role")
    assert json.loads(value(role, "--assume-role-policy-document")) == trust_policy(
        ACCOUNT, REPOSITORY
    )
    json.loads(value(call("aws", "iam", "put-role-policy"), "--policy-document"))
    # The real keygen made the key; the secret got the PEM, and the file was removed after.
    secret = calls.index(call("gh", "secret", "set"))
    assert "PRIVATE KEY" in (stdin[secret] or "")
    assert not (work / "signing.pem").exists() and (work / "signing.pub.pem").exists()
    assert call("gh", "workflow", "run")[3] == "commsaudit.yml"
