"""The redactor: the credential shapes it removes, and the evidence it must leave alone.

A name that only resembles a secret (a mailbox called "-----BEGIN PRIVATE KEY-----", a user
called "eyJ front desk") must reach the policies and the bundle as it is; a real credential of any
known shape must reach neither the bundle, nor the reports, nor the output."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from auditor.redact import REDACTED, Redactor
from connectors.m365.sandbox.server import Sandbox

from helpers import REPO, run_cli

BASE = REPO / "tests" / "data" / "m365-published" / "base"
BREAK_GLASS = "breakglass01@northwindclinic.onmicrosoft.com"

# Invented credentials of the shapes the redactor knows, beyond those of test_secrets.py.
AWS_KEY_ID = "AKIAZ7EXAMPLE2QRSTUV"
AWS_SESSION_KEY_ID = "ASIAQ3EXAMPLE4WXYZAB"
URL_PASSWORD = "hunter2-canary-url-pw"
BASIC = "Y2FuYXJ5OmJhc2ljLXBhc3N3b3Jk"  # canary:basic-password
STORAGE_KEY = "canaryStorageKey0123456789abcdefghijklmnopqrstuvwxyzABCD=="
SAS = "sv=2022-11-02&ss=b&srt=co&sp=r&se=2030-01-01&sig=canarySASsignature123"
PULUMI = "pul-" + "0123456789abcdef" * 2 + "01234567"
SLACK = "xoxb-123456789012-1234567890123-canarySlackBotTokenAbCd"

SHAPES = {
    "aws key id": (f"key {AWS_KEY_ID} in use", AWS_KEY_ID),
    "aws session key id": (f'{{"AccessKeyId": "{AWS_SESSION_KEY_ID}"}}', AWS_SESSION_KEY_ID),
    "url password": (f"smarthost https://relay:{URL_PASSWORD}@smtp.example.org:587", URL_PASSWORD),
    "basic authorization": (f"Authorization: Basic {BASIC}", BASIC),
    "basic authorization in json": (f'{{"Authorization": "Basic {BASIC}"}}', BASIC),
    "storage account key": (
        f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={STORAGE_KEY};EndpointSuffix=y",
        STORAGE_KEY,
    ),
    "shared access signature": (
        f"BlobEndpoint=https://x.blob.example;SharedAccessSignature={SAS}",
        "canarySASsignature123",
    ),
    "pulumi token": (f"PULUMI_TOKEN={PULUMI}", PULUMI),
    "slack token": (f"webhook token {SLACK}", SLACK),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_new_credential_shape_is_removed(shape: str) -> None:
    text, secret = SHAPES[shape]
    cleaned = Redactor().text(text)
    assert secret not in cleaned and REDACTED in cleaned, cleaned


# Names an organisation may well give things: each looks like the start of a credential.
LOOKALIKES = [
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "eyJ front desk",
    "eyJhbGciOi planning",
    "AKIA project team",
    "ASIAPACIFICOPERATIONSTEAM",
    "pul-request reviewers",
    "xoxo-greetings-and-thanks",
    "Block basic authentication",
    "https://intranet.northwindclinic.example/wiki",
    "Token of appreciation",
    "Password reset desk",
]


def test_names_that_only_resemble_credentials_are_left_alone() -> None:
    redactor = Redactor(["a-real-secret-value"])
    for name in LOOKALIKES:
        assert redactor.text(name) == name
    items = [{"Identity": name, "AuditBypassEnabled": False} for name in LOOKALIKES]
    assert redactor.json(items) == items


def test_scrubbing_json_never_reaches_across_strings() -> None:
    # The two ends of a private key in two neighbours' names must not swallow the item between
    # them: the answer would lose a mailbox and still be valid JSON.
    answer = [
        {"Identity": "-----BEGIN PRIVATE KEY-----", "AuditBypassEnabled": False},
        {"Identity": "svc-archive", "AuditBypassEnabled": True},
        {"Identity": "-----END PRIVATE KEY-----", "AuditBypassEnabled": False},
    ]
    redactor = Redactor()
    assert redactor.json(answer) == answer
    text = json.dumps(answer)
    assert redactor.text(text) == text
    assert redactor.bytes(text.encode()) == text.encode()


def test_a_whole_private_key_is_removed_in_a_string_or_in_plain_text() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    cleaned = Redactor().json({"note": f"pasted by mistake: {key}"})
    assert cleaned == {"note": f"pasted by mistake: {REDACTED}"}
    assert Redactor().text(f"log line\n{key}\nnext") == f"log line\n{REDACTED}\nnext"


def test_repeated_key_markers_do_not_stop_the_scrub() -> None:
    # A thousand markers and no end: each match attempt stops at its string's end, so the scan
    # stays linear (it was quadratic), and nothing that is not a key is touched.
    names = [f"-----BEGIN PRIVATE KEY----- {i}" for i in range(1000)]
    assert Redactor().json(names) == names
    text = "\n".join(names)
    assert Redactor().text(text) == text


def test_a_known_secret_that_starts_inside_a_credential_shape_is_still_found() -> None:
    # The key id's shape and the secret overlap: one pass reports both, not only the first.
    secret = "MNOPQRSTUV-private-value-7731"
    text = f"id AKIAZ7EXAMPLE2QRSTU{secret} end"
    cleaned = Redactor([secret]).text(text)
    assert secret not in cleaned and "private-value" not in cleaned


@pytest.mark.parametrize("kind", ["text", "bytes", "json"])
def test_when_the_one_pass_scan_cannot_be_trusted_each_net_runs_on_its_own(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RE2 gives up on a set whose memory runs out; the set then does not report reaching the
    # end of the text, and the redactor falls back to the hint expression and exact search.
    import auditor.redact

    monkeypatch.setattr(auditor.redact._Finder, "present", lambda self, data: None)
    secret = "exact-secret-value-0042"
    redactor = Redactor([secret])
    text = f"token {secret} and key {AWS_KEY_ID}"
    if kind == "text":
        cleaned = redactor.text(text)
    elif kind == "bytes":
        cleaned = redactor.bytes(text.encode()).decode()
    else:
        cleaned = redactor.json({"note": text})["note"]
    assert secret not in cleaned and AWS_KEY_ID not in cleaned
    assert cleaned.count(REDACTED) == 2


def test_clean_bytes_come_back_as_the_same_object() -> None:
    body = json.dumps({"value": [{"userPrincipalName": f"u{i}@example.org"} for i in range(50)]})
    data = body.encode()
    assert Redactor(["some-secret-value"]).bytes(data) is data


def _tenant(tmp_path: Path) -> Path:
    """The published-shape tenant with lookalike names, and real credentials planted in free-text
    properties where a careless administrator might paste them."""
    tenant = tmp_path / "tenant"
    shutil.copytree(BASE, tenant, ignore=shutil.ignore_patterns("provenance.toml"))
    bypass_path = tenant / "exo" / "Get-MailboxAuditBypassAssociation.json"
    bypass = json.loads(bypass_path.read_text())
    bypass[1:1] = [
        {"Identity": "-----BEGIN PRIVATE KEY-----", "Name": "begin", "AuditBypassEnabled": False},
        {"Identity": "svc-archive", "Name": "svc-archive", "AuditBypassEnabled": True},
        {"Identity": "-----END PRIVATE KEY-----", "Name": "end", "AuditBypassEnabled": False},
    ]
    bypass_path.write_text(json.dumps(bypass))
    users_path = tenant / "graph" / "v1.0" / "users.json"
    users = json.loads(users_path.read_text())
    for user, name in zip(users["value"], LOOKALIKES[2:], strict=False):
        user["displayName"] = name
    users_path.write_text(json.dumps(users))
    dlp_path = tenant / "compliance" / "Get-DlpCompliancePolicy.json"
    dlp = json.loads(dlp_path.read_text())
    dlp[0]["Comment"] = " | ".join(text for text, _secret in SHAPES.values())
    dlp_path.write_text(json.dumps(dlp))
    return tenant


def _audit(tenant: Path, tmp_path: Path) -> tuple[Any, dict[str, bytes]]:
    with Sandbox(tenant) as served:
        config = tmp_path / "commsaudit.toml"
        config.write_text(
            served.config_toml("client-secret")
            + f'break_glass_accounts = ["{BREAK_GLASS}"]\n'
            + '[policies]\ncontrols = ["m365.*"]\n[evidence]\nout = "out"\n'
        )
        proc = run_cli(
            "audit", "--config", config, "--format", "json", "-v", cwd=tmp_path,
            env=served.environment(),
        )  # fmt: skip
    bundle = next((tmp_path / "out").glob("*.zip"))
    with zipfile.ZipFile(bundle) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    for path in (tmp_path / "out").iterdir():
        if path.is_file() and path.suffix != ".zip":
            members[f"out/{path.name}"] = path.read_bytes()
    members["stdout"] = proc.stdout.encode()
    members["stderr"] = proc.stderr.encode()
    return proc, members


def test_through_the_cli_lookalikes_reach_the_policies_and_credentials_reach_nothing(
    tmp_path: Path,
) -> None:
    proc, members = _audit(_tenant(tmp_path), tmp_path)
    assert proc.returncode == 1, proc.stderr
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    # The account between the two markers is still there, and fails the control.
    auditing = results["m365.audit.mailbox-auditing"]
    assert auditing["status"] == "fail"
    assert {"Identity": "svc-archive", "Name": "svc-archive"} in auditing["evidence"][0]["value"]
    # The names reach the snapshot the policies evaluated, unchanged.
    snapshot = json.loads(members["snapshot.json"])
    sections = {s["name"]: s for s in snapshot["sections"]}
    bypassed = sections["m365.exo.mailbox_auditing"]["data"]
    assert bypassed["bypassed"] == [{"Identity": "svc-archive", "Name": "svc-archive"}]
    raw_bypass = json.loads(members["raw/m365/exo/Get-MailboxAuditBypassAssociation.json"])
    assert [b["Identity"] for b in raw_bypass[1:4]] == [
        "-----BEGIN PRIVATE KEY-----",
        "svc-archive",
        "-----END PRIVATE KEY-----",
    ]
    raw_users = json.loads(members["raw/m365/graph/v1.0/users.json"])
    names = {u["displayName"] for u in raw_users["value"]}
    assert set(LOOKALIKES[2:]) & names == set(LOOKALIKES[2 : 2 + len(raw_users["value"])])
    # No planted credential is anywhere: bundle, side files, stdout, stderr.
    for where, content in members.items():
        text = content.decode("utf-8", errors="replace")
        for _shape, (_text, secret) in SHAPES.items():
            assert secret not in text, f"{secret[:12]}… found in {where}"
    comment = json.loads(members["raw/m365/compliance/Get-DlpCompliancePolicy.json"])[0]["Comment"]
    assert comment.count(REDACTED) >= len(SHAPES)
