"""Hostile and unlucky local input: attestations, config and policy files, API answers.

A number that is not a number (NaN, infinity), a YAML bomb, a file that is not what the config
says it is, a typo in a control glob, a policy that quietly replaces a built-in one: each must end
in one line a person can act on (exit 2), or be said out loud, never a false pass, a traceback or
the whole file echoed back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditor.resources import policies_dir
from connectors.m365.sandbox.server import Sandbox

from helpers import REPO, member_json, run_cli

TENANT = REPO / "fixtures" / "tenants" / "contoso-health"

GOOD_ATTESTATIONS = """\
organisation: Example Clinic
restore_tests:
  - {date: 2026-01-01, system: archive, restore_hours: 6, succeeded: true}
"""


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run failed as an input error: exit 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("commsaudit: error: "), lines[0]
    return lines[0]


def _audit(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "commsaudit.toml").write_bytes(config.encode("utf-8", "surrogateescape"))
    return run_cli("audit", "--out", tmp_path / "out", *args, cwd=tmp_path)


def _audit_attestations(
    tmp_path: Path, text: str, *args: str, name: str = "attestations.yaml", extra: str = ""
) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(text)
    return _audit(tmp_path, f'[attestations]\nfile = "{name}"\n{extra}', *args)


# --- 3. NaN and infinities -------------------------------------------------------------------


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+999"])
def test_a_restore_time_that_is_not_a_number_is_an_input_error_with_its_line(
    tmp_path: Path, value: str
) -> None:
    """NaN compares false with every limit: under `validator = "jsonschema"` it passed the
    hipaa-nprm-2025 72-hour restore limit, and the bundle then failed `verify`."""
    text = GOOD_ATTESTATIONS.replace("restore_hours: 6", f"restore_hours: {value}")
    proc = _audit_attestations(
        tmp_path,
        text,
        "--profile",
        "hipaa-nprm-2025",
        "--controls",
        "org.contingency.restore-tested",
        extra='[policies]\nvalidator = "jsonschema"\n',
    )
    line = _one_error_line(proc)
    assert "attestations.yaml:3" in line, line
    assert "restore_hours" in line and "not a finite number" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_json_attestations_file_with_nan_is_an_input_error_with_its_line(
    tmp_path: Path, token: str
) -> None:
    text = (
        '{\n  "organisation": "Example Clinic",\n  "restore_tests": [\n'
        '    {"date": "2026-01-01", "system": "archive",\n'
        f'     "restore_hours": {token}, "succeeded": true}}\n  ]\n}}\n'
    )
    proc = _audit_attestations(tmp_path, text, name="attestations.json")
    line = _one_error_line(proc)
    assert "attestations.json:5" in line and token in line, line


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ('[policies.parameters."org.contingency.restore-tested"]', "max_restore_hours", "nan"),
        ('[policies.parameters."org.contingency.restore-tested"]', "max_restore_hours", "+inf"),
        ('[policies.parameters."org.contingency.restore-tested"]', "max_restore_hours", "-nan"),
        ("[dns]\ndomains = []", "timeout_seconds", "inf"),
    ],
)
def test_a_config_value_that_is_not_a_finite_number_is_an_input_error_with_its_line(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    (tmp_path / "attestations.yaml").write_text(GOOD_ATTESTATIONS)
    config = (
        '[attestations]\nfile = "attestations.yaml"\n'
        '[policies]\nvalidator = "jsonschema"\n'
        f"{table}\n# {key} = nan in a comment is not a value\n{key} = {value}\n"
    )
    proc = _audit(tmp_path, config, "--profile", "hipaa-nprm-2025")
    line = _one_error_line(proc)
    number = config.splitlines().index(f"{key} = {value}") + 1
    assert f"commsaudit.toml:{number}" in line, line
    assert key in line and "not a finite number" in line, line


def test_a_snapshot_file_with_nan_is_an_input_error(tmp_path: Path) -> None:
    """`commsaudit evaluate` reads a snapshot file: NaN there would pass a numeric limit."""
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(
        '{"format": "commsaudit/snapshot/v1", "collected_at": "2026-01-01T00:00:00Z",\n'
        '"scope": {}, "sources": {}, "sections": [{"name": "org.restore_test", "platform": "org",'
        '\n "subject": "X", "status": "ok", "data": {"latest_successful": {"restore_hours": NaN}}}]}'
    )
    proc = run_cli("evaluate", snapshot, cwd=tmp_path)
    line = _one_error_line(proc)
    assert "snapshot.json" in line and "NaN is not a finite number" in line and "line 3" in line


def _tenant_with(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of the recorded tenant whose answers carry a bare NaN token: each edit replaces
    the first `old` text of a recorded file with `new`."""
    tenant = tmp_path / "tenant"
    shutil.copytree(TENANT, tenant)
    for name, (old, new) in edits.items():
        path = tenant / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    return tenant


def test_an_api_answer_with_nan_makes_its_section_an_error(tmp_path: Path) -> None:
    """Python's json reads NaN and Infinity, which JSON does not have: an answer carrying them
    is malformed, and its section is `error`, never judged (the sandbox serves the tokens as
    they are recorded)."""
    tenant = _tenant_with(
        tmp_path,
        {
            # Exchange's admin API (cmdlet pages)
            "exo/Get-Mailbox.json": ('"AuditEnabled": true', '"AuditEnabled": NaN'),
            # Graph, a single object read through $batch
            "graph/v1.0/admin/sharepoint/settings.json": (
                '"deletedUserPersonalSiteRetentionPeriodInDays": 365',
                '"deletedUserPersonalSiteRetentionPeriodInDays": Infinity',
            ),
        },
    )
    with Sandbox(tenant) as served:
        config = tmp_path / "commsaudit.toml"
        config.write_text(served.config_toml() + '[evidence]\nout = "out"\n')
        proc = run_cli(
            "audit",
            "--config",
            config,
            "--format",
            "json",
            "--controls",
            "m365.audit.mailbox-auditing,m365.sharepoint.external-sharing-restricted",
            cwd=tmp_path,
            env=served.environment(),
        )
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr[-2000:]
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    for control in ("m365.audit.mailbox-auditing", "m365.sharepoint.external-sharing-restricted"):
        assert results[control]["status"] == "error", results[control]
        assert "malformed JSON" in results[control]["reason"], results[control]
    bundle = next((tmp_path / "out").glob("*.zip"))
    for section in member_json(bundle, "snapshot.json")["sections"]:
        if section["name"] in ("m365.exo.mailbox_auditing", "m365.sharepoint.settings"):
            assert section["status"] == "error", section


class _StubbedSession:
    """An AwsSession whose clients answer from botocore's Stubber: the answer as botocore
    parsed it, whatever the wire carried (its parsers read NaN from JSON and from XML)."""

    def __init__(self, service: str, method: str, answer: dict[str, Any]) -> None:
        import boto3
        from botocore.stub import Stubber

        self._client = boto3.client(
            service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        stubber = Stubber(self._client)
        stubber.add_response(method, answer)
        stubber.activate()

    def client(self, service: str, region: str) -> Any:
        return self._client


def test_an_aws_answer_with_nan_is_an_error_for_that_read() -> None:
    import asyncio
    import datetime as dt
    import time

    from connectors.aws.calls import AwsReader
    from connectors.base import CollectContext

    session = _StubbedSession(
        "sesv2",
        "get_account",
        {"SendQuota": {"Max24HourSend": float("nan"), "MaxSendRate": 1.0, "SentLast24Hours": 0}},
    )
    ctx = CollectContext(
        connector="aws", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 30
    )
    reader = AwsReader(session, ctx)  # type: ignore[arg-type]
    read = asyncio.run(reader.read("sesv2", "us-east-1", "get_account"))
    assert not read.ok and read.data is None, read
    assert read.error is not None and "not a finite number" in read.error, read.error


def test_a_pulumi_stack_export_with_nan_is_refused(tmp_path: Path) -> None:
    from connectors.pulumi.sources import StackError, read_export

    text = (REPO / "fixtures" / "pulumi" / "contoso-comms-prod.compliant.export.json").read_text()
    assert '"minimumPasswordLength": 14.0' in text
    export = tmp_path / "export.json"
    export.write_text(text.replace('"minimumPasswordLength": 14.0', '"minimumPasswordLength": NaN'))
    with pytest.raises(StackError, match="NaN is not a finite number"):
        read_export(export, None, "us-east-1")


# --- 7. Errors quote at most the offending line -----------------------------------------------


def _passwd(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = [
        f"user{i}:x:{1000 + i}:{1000 + i}:User Number {i}:/home/user{i}:/bin/bash"
        for i in range(40)
    ]
    path = tmp_path / "passwd"
    path.write_text("\n".join(["root:x:0:0:root:/root:/bin/bash", *lines]) + "\n")
    return path, lines


def _assert_not_echoed(line: str, others: list[str]) -> None:
    assert len(line) <= 400, line
    for other in others:
        # Not the other lines, nor a telling piece of one.
        assert other not in line and other.split(":")[0] + ":x:" not in line, line


def test_an_attestations_file_that_is_not_one_quotes_only_its_first_line(tmp_path: Path) -> None:
    passwd, others = _passwd(tmp_path)
    proc = _audit(tmp_path, f'[attestations]\nfile = "{passwd}"\n')
    line = _one_error_line(proc)
    assert "passwd:1" in line, line
    _assert_not_echoed(line, others)


def test_a_long_value_in_the_wrong_place_is_quoted_short(tmp_path: Path) -> None:
    others = [f"line {i} of a pasted document that does not belong here" for i in range(2, 60)]
    text = "organisation: |\n" + "".join(f"  {o}\n" for o in ["first line", *others])
    text += "trainings: " + "x" * 5000 + "\n"
    proc = _audit_attestations(tmp_path, text)
    line = _one_error_line(proc)
    _assert_not_echoed(line, [*others, "x" * 200])


def test_a_config_value_of_the_wrong_kind_is_quoted_short(tmp_path: Path) -> None:
    others = [f"secret-ish line {i} pasted by accident" for i in range(2, 60)]
    body = "\n".join(["first line", *others])
    proc = _audit(tmp_path, f'[policies]\nvalidator = """{body}"""\n')
    line = _one_error_line(proc)
    assert "validator" in line, line
    _assert_not_echoed(line, others)


def test_a_policy_file_with_a_long_value_is_quoted_short(tmp_path: Path) -> None:
    own = tmp_path / "policies"
    own.mkdir()
    document = json.loads((policies_dir() / "org.training.current.json").read_text())
    others = [f"paragraph {i} of a document pasted into the wrong field" for i in range(2, 60)]
    document["severity"] = "\n".join(["first line", *others])
    (own / "org.training.current.json").write_text(json.dumps(document, indent=2))
    (tmp_path / "attestations.yaml").write_text(GOOD_ATTESTATIONS)
    proc = _audit(
        tmp_path, '[attestations]\nfile = "attestations.yaml"\n[policies]\npaths = ["policies"]\n'
    )
    line = _one_error_line(proc)
    assert "org.training.current.json" in line and "/severity" in line, line
    _assert_not_echoed(line, others)


# --- 11. YAML bombs and other malformed attestations --------------------------------------------

BILLION_LAUGHS = """\
organisation: X
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


# `commsaudit` in a child that may not grow past 1 GiB of address space (a normal run needs
# under 512 MiB): on code that expands the bomb, the run ends in MemoryError, not in swap.
_LIMITED = (
    "import resource, runpy; "
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
    "runpy.run_module('auditor', run_name='__main__')"
)


def test_a_billion_laughs_file_is_refused_before_it_expands(tmp_path: Path) -> None:
    (tmp_path / "attestations.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "commsaudit.toml").write_text('[attestations]\nfile = "attestations.yaml"\n')
    env = {k: v for k, v in os.environ.items() if k != "COMMSAUDIT_SIGNING_KEY"}
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, "audit", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = _one_error_line(proc)
    assert "attestations.yaml:2" in line and "anchor" in line, line


@pytest.mark.parametrize(
    ("text", "line_no", "words"),
    [
        # an alias on its own, without the bomb
        (
            "organisation: X\nrisk_analyses:\n  - &one {date: 2026-01-01, performed_by: A}\n"
            "  - *one\n",
            3,
            "anchor",
        ),
        ("organisation: X\nrisk_analyses: " + "[" * 3000 + "]" * 3000 + "\n", 2, "nested"),
        (
            "organisation: X\nrisk_analyses:\n  - {date: 2026-01-01, performed_by: A\x00}\n",
            3,
            "NUL",
        ),
        (
            "organisation: X\ntrainings:\n  - {date: 2026-01-01, workforce: " + "9" * 5000 + "}\n",
            3,
            "digits",
        ),
        (
            "organisation: X\nrisk_analyses:\n  - {date: 2026-01-01, performed_by: !!binary aGVsbG8=}\n",
            3,
            "binary",
        ),
    ],
    ids=["alias", "deep-nesting", "nul-byte", "5000-digits", "binary-tag"],
)
def test_a_malformed_yaml_attestations_file_is_an_input_error_with_its_line(
    tmp_path: Path, text: str, line_no: int, words: str
) -> None:
    proc = _audit_attestations(tmp_path, text)
    line = _one_error_line(proc)
    assert f"attestations.yaml:{line_no}" in line, line
    assert words in line, line


def test_a_deeply_nested_json_attestations_file_is_an_input_error(tmp_path: Path) -> None:
    text = '{"organisation": "X",\n "risk_analyses": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    proc = _audit_attestations(tmp_path, text, name="attestations.json")
    line = _one_error_line(proc)
    assert "attestations.json:2" in line and "nested" in line, line


# --- 15. Clean config errors, selections that match nothing, policy overrides --------------------


def test_a_config_file_that_is_not_utf8_is_one_input_error(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_bytes(b'[attestations]\nfile = "att\xff.yaml"\n')
    proc = run_cli("audit", cwd=tmp_path)
    line = _one_error_line(proc)
    assert "commsaudit.toml:2" in line and "UTF-8" in line, line


@pytest.mark.parametrize("opening", ["[", "{x = "])
def test_a_deeply_nested_config_value_is_one_input_error(tmp_path: Path, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    text = "[attestations]\nfile = 'a.yaml'\n[policies]\nvalidator = " + opening * 5000
    text += "1" + closing * 5000 + "\n"
    (tmp_path / "commsaudit.toml").write_text(text)
    proc = run_cli("audit", cwd=tmp_path)
    line = _one_error_line(proc)
    assert "commsaudit.toml:4" in line and "nested" in line, line


def test_a_policy_file_nested_too_deeply_is_one_input_error(tmp_path: Path) -> None:
    own = tmp_path / "policies"
    own.mkdir()
    (own / "acme.deep.json").write_text(
        '{"id": "acme.deep",\n "schema": ' + "[" * 50_000 + "]" * 50_000 + "}"
    )
    (tmp_path / "attestations.yaml").write_text(GOOD_ATTESTATIONS)
    proc = _audit(
        tmp_path, '[attestations]\nfile = "attestations.yaml"\n[policies]\npaths = ["policies"]\n'
    )
    line = _one_error_line(proc)
    assert "acme.deep.json:2" in line and "nested" in line, line


def test_a_control_glob_in_the_config_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    proc = _audit_attestations(
        tmp_path, GOOD_ATTESTATIONS, extra='[policies]\ncontrols = ["typo*"]\n'
    )
    line = _one_error_line(proc)
    assert "'typo*'" in line and "commsaudit policies list" in line, line
    assert "commsaudit.toml" in line, line


def test_a_control_glob_on_the_command_line_that_matches_nothing_is_an_error(
    tmp_path: Path,
) -> None:
    proc = _audit_attestations(tmp_path, GOOD_ATTESTATIONS, "--controls", "org.*,typo*")
    line = _one_error_line(proc)
    assert "--controls" in line and "'typo*'" in line and "commsaudit policies list" in line, line


def test_a_selection_that_leaves_no_control_is_an_error(tmp_path: Path) -> None:
    """Each glob matches controls, but none of them is in the profile: nothing would be judged
    and the run would pass."""
    proc = _audit_attestations(
        tmp_path, GOOD_ATTESTATIONS, "--profile", "email-posture", "--controls", "org.*"
    )
    line = _one_error_line(proc)
    assert "email-posture" in line and "org.*" in line, line


def test_evaluate_also_refuses_a_glob_that_matches_nothing(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(
        json.dumps(
            {
                "format": "commsaudit/snapshot/v1",
                "collected_at": "2026-01-01T00:00:00Z",
                "scope": {},
                "sources": {},
                "sections": [],
            }
        )
    )
    proc = run_cli("evaluate", snapshot, "--controls", "typo*", cwd=tmp_path)
    line = _one_error_line(proc)
    assert "'typo*'" in line, line


def _override(tmp_path: Path) -> None:
    own = tmp_path / "our-policies"
    own.mkdir()
    shutil.copy(policies_dir() / "org.contingency.restore-tested.json", own)
    (tmp_path / "attestations.yaml").write_text(GOOD_ATTESTATIONS)
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n[policies]\npaths = ["our-policies"]\n'
    )


def test_a_policy_that_replaces_a_built_in_control_is_said_in_the_run_and_the_manifest(
    tmp_path: Path,
) -> None:
    _override(tmp_path)
    proc = run_cli(
        "audit", "--out", tmp_path / "out", "--format", "json", "--controls", "org.*", cwd=tmp_path
    )
    assert proc.returncode in (0, 1), proc.stderr
    said = [line for line in proc.stderr.splitlines() if "replaces the built-in" in line]
    assert len(said) == 1 and "org.contingency.restore-tested" in said[0], proc.stderr
    assert "our-policies" in said[0], said
    warnings = json.loads(proc.stdout)["run"]["warnings"]
    assert any("org.contingency.restore-tested" in w and "built-in" in w for w in warnings)
    bundle = next((tmp_path / "out").glob("*.zip"))
    manifest: dict[str, Any] = member_json(bundle, "manifest.json")
    overridden = manifest["policies"]["overridden"]
    assert [o["id"] for o in overridden] == ["org.contingency.restore-tested"], overridden
    assert overridden[0]["file"] == "policies/org.contingency.restore-tested.json", overridden
    assert overridden[0]["replaces"] == "built-in", overridden
    assert run_cli("verify", bundle, cwd=tmp_path).returncode == 0


def test_an_override_outside_the_selection_is_not_reported(tmp_path: Path) -> None:
    _override(tmp_path)
    proc = run_cli("audit", "--out", tmp_path / "out", "--controls", "org.training.*", cwd=tmp_path)
    assert "replaces the built-in" not in proc.stderr, proc.stderr
