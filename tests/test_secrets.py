"""No secret, token or private key may appear anywhere in a bundle, the reports or the output."""

from __future__ import annotations

import datetime as dt
import json
import logging
import zipfile
from pathlib import Path

from auditor.evidence import signing

from helpers import run_cli
from sample import write_sample

AZURE_SECRET = "canaryAzure8Q~x1y2z3a4b5c6d7e8f9g0h1i2j3k4l5m6"
AWS_SECRET = "canary/AWS+secretKEY1234567890abcdefghijklm"
GITHUB_TOKEN = "ghp_canary0123456789abcdefghijklmnopqrstuvwx"
QUOTED = 'canary"quoted\\secret-value'
CUSTOM = "canary-custom-value-for-a-plain-name"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnktand0In0.c2lnbmF0dXJlLWNhbmFyeQ"


def test_canary_secrets_never_reach_the_bundle_reports_or_output(tmp_path: Path) -> None:
    key_path, _public, _fp = signing.write_keypair(tmp_path / "keys" / "signing.pem")
    private_pem = key_path.read_text()
    today = dt.datetime.now(dt.UTC).date()
    # Secrets planted where a careless user or an API response might put them.
    config = write_sample(
        tmp_path / "org",
        notes=f"temporary password {AZURE_SECRET} and {QUOTED} and {CUSTOM}",
        recent=(today - dt.timedelta(days=10)).isoformat(),
        extra_transport={
            "Authorization": f"Bearer {JWT}",
            "ConnectionString": f"AccountKey={AWS_SECRET};token={GITHUB_TOKEN}",
        },
        config_extra='secret_env = ["PLAIN_NAME"]\n',
    )
    env = {
        "AZURE_CLIENT_SECRET": AZURE_SECRET,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "SOME_PASSWORD": QUOTED,
        "PLAIN_NAME": CUSTOM,
        "COMMSAUDIT_SIGNING_KEY": private_pem,
    }
    proc = run_cli("audit", "--config", config, "--format", "json", "-vv", cwd=tmp_path, env=env)
    # The audit ran (not 2); the sample leaves some controls unjudged, which exits 3.
    assert proc.returncode in (0, 1, 3), proc.stderr
    out = config.parent / "out"
    bundle = next(out.glob("*.zip"))

    haystacks: dict[str, bytes] = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
    with zipfile.ZipFile(bundle) as archive:
        assert "SHA256SUMS.sig" in archive.namelist()  # signed with the planted key
        for info in archive.infolist():
            haystacks[f"bundle:{info.filename}"] = archive.read(info)
    haystacks["bundle (raw bytes)"] = bundle.read_bytes()
    for path in out.iterdir():
        haystacks[f"out/{path.name}"] = path.read_bytes()

    key_lines = [line for line in private_pem.splitlines() if "-----" not in line]
    needles = [AZURE_SECRET, AWS_SECRET, GITHUB_TOKEN, QUOTED, CUSTOM, JWT, *key_lines]
    needles += ['canary\\"quoted\\\\secret-value']  # the JSON-escaped form of QUOTED
    for where, content in haystacks.items():
        text = content.decode("utf-8", errors="replace")
        for needle in needles:
            assert needle not in text, f"{needle[:12]}… found in {where}"
    # The redaction is visible, not silent.
    raw = haystacks["bundle:raw/replay/tenant.json"].decode()
    assert "[REDACTED]" in raw
    assert (
        "temporary password [REDACTED]"
        in haystacks["bundle:raw/attestations/attestations.yaml"].decode()
    )


def test_the_runs_own_secrets_are_scrubbed_from_log_lines_too(tmp_path: Path) -> None:
    # A signing key read from a file is known only once the run has read it, and a token only
    # once it is issued: the log lines are scrubbed with the run's redactor, which knows them.
    key_path, _public, _fp = signing.write_keypair(tmp_path / "keys" / "signing.pem")
    key_line = next(line for line in key_path.read_text().splitlines() if "-----" not in line)
    config = write_sample(
        tmp_path / "org",
        recent=dt.date.today().isoformat(),
        config_extra=f"signing_key_file = {json.dumps(str(key_path))}\n",
    )
    from auditor import commands
    from auditor.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["-q", "audit", "--config", str(config), "--format", "json"]) in (0, 1, 3)
    finally:  # main() sets the process's logging up as the command's own
        root.handlers[:] = handlers
        root.setLevel(level)
    record = logging.LogRecord("sdk", logging.DEBUG, __file__, 1, f"body: {key_line}", None, None)
    commands._log_filter.filter(record)
    assert key_line not in record.getMessage()
    assert "[REDACTED]" in record.getMessage()
