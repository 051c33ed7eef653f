"""The whole Microsoft 365 connector on answers whose shapes are copied from published sources
(tests/data/m365-published): Microsoft's Graph and cmdlet references and public clients' captured
answers, values invented, each file with its provenance.

`base/` is a compliant tenant. Each case under `cases/` changes it the way a real tenant can be
(one issue point each: a narrowing condition, a DLP exception, a grouped sensitive-type rule …)
and names the verdicts that must follow; every Microsoft 365 control it does not name must keep
its verdict on the base tenant, so one odd answer costs only the controls that read it.
Everything goes through the sandbox, over HTTPS, as a live run would.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.engine import EvaluationContext, evaluate
from auditor.model.snapshot import Snapshot
from auditor.policy import load_policies
from auditor.resources import policies_dir
from connectors.base import CollectContext
from connectors.m365.connector import M365Connector
from connectors.m365.sandbox.server import SECRET_ENV, Faults, RecordedTenant, Sandbox

from helpers import REPO, run_cli

PUBLISHED = REPO / "tests" / "data" / "m365-published"
BASE = PUBLISHED / "base"
BREAK_GLASS = "breakglass01@northwindclinic.onmicrosoft.com"
SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


def _cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted((PUBLISHED / "cases").glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        case["name"] = path.stem
        cases.append(case)
    return cases


CASES = _cases()


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _apply(document: Any, patch: dict[str, Any]) -> None:
    """One JSON Patch operation (RFC 6902: add, replace, remove) on a loaded answer."""
    *parents, last = _pointer(patch["path"])
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = patch["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(patch["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(patch["value"])
        else:
            del node[index]
    elif op == "remove":
        del node[last]
    else:
        if op == "replace":
            assert last in node, f"replace {patch['path']}: no such member"
        node[last] = copy.deepcopy(patch["value"])


def build_case(case: dict[str, Any], into: Path) -> Path:
    """The base tenant with the case's patches and whole files, in `into`."""
    shutil.copytree(BASE, into, ignore=shutil.ignore_patterns("provenance.toml"))
    for relative, body in case.get("files", {}).items():
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(body), encoding="utf-8")
    for patch in case.get("patches", []):
        target = into / patch["file"]
        document = json.loads(target.read_text(encoding="utf-8"))
        _apply(document, {**patch, "value": _resolve(patch.get("value"), into)})
        target.write_text(json.dumps(document), encoding="utf-8")
    return into


def _resolve(value: Any, tenant: Path) -> Any:
    """`{"$from_strengths": ID}`: the tenant's own published strength object of that id, as
    Conditional Access inlines it in grantControls."""
    if isinstance(value, dict) and set(value) == {"$from_strengths"}:
        listed = json.loads(
            (tenant / "graph/v1.0/policies/authenticationStrengthPolicies.json").read_text()
        )
        return next(s for s in listed["value"] if s["id"] == value["$from_strengths"])
    return value


def _config(sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tenant_id": sandbox.tenant.tenant_id,
        "client_id": sandbox.client_id,
        # A certificate: SharePoint's admin API, read too, refuses client-secret tokens.
        "auth": "certificate",
        "certificate_file": str(sandbox.files["client"]),
        "read_sharepoint_admin": True,
        "endpoints": sandbox.endpoints(),
        "break_glass_accounts": [BREAK_GLASS],
        "limits": {"retries": 2, "backoff_seconds": 0.05, "timeout_seconds": 10},
    }
    config.update(extra)
    return config


def collect(sandbox: Sandbox, **extra: Any) -> tuple[CollectContext, M365Connector]:
    connector = M365Connector(_config(sandbox, **extra), Path())
    connector.environ = {SECRET_ENV: sandbox.client_secret}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
    )
    asyncio.run(connector.collect(ctx))
    return ctx, connector


def verdicts(ctx: CollectContext, profile: str = "hipaa") -> dict[str, tuple[str, str]]:
    """control -> (status, its reason and evidence as text) for every m365.* control of the
    profile."""
    now = dt.datetime.now(dt.UTC)
    snapshot = Snapshot(collected_at=now)
    for platform, kind, subject in ctx.subjects:
        snapshot.add_subject(platform, kind, subject)
    snapshot.sections.extend(ctx.sections)
    policies = load_policies([policies_dir()]).select(profile, ["m365.*"])
    results = evaluate(policies, snapshot, EvaluationContext(profile, now)).results
    return {
        r.control: (
            r.status,
            f"{r.reason or ''} {json.dumps([(e.pointer, e.value) for e in r.evidence])}",
        )
        for r in results
    }


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox for the module; each case swaps the tenant it serves."""
    with Sandbox(BASE) as served:
        yield served


@pytest.fixture(scope="module")
def base_verdicts(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    sandbox.tenant = RecordedTenant(BASE)
    ctx, _ = collect(sandbox)
    return verdicts(ctx)


def test_every_file_has_its_provenance_and_every_read_has_a_published_answer(
    sandbox: Sandbox,
) -> None:
    provenance = tomllib.loads((BASE / "provenance.toml").read_text(encoding="utf-8"))
    files = {p.relative_to(BASE).as_posix() for p in BASE.rglob("*.json")}
    assert files == set(provenance), set(provenance) ^ files
    assert all(isinstance(v, str) and "invented" in v for v in provenance.values())
    sandbox.tenant = RecordedTenant(BASE)
    sandbox.log.clear()
    ctx, _ = collect(sandbox)
    asked = {e.recorded for e in sandbox.log if e.recorded}
    missing = {path for path in asked if f"{path}.json" not in files}
    assert not missing, f"the connector reads answers with no published shape here: {missing}"
    assert all(s.status == "ok" for s in ctx.sections), {
        s.name: s.reason for s in ctx.sections if s.status != "ok"
    }


def test_the_base_tenant_passes_every_control(base_verdicts: dict[str, tuple[str, str]]) -> None:
    failing = {c: v for c, v in base_verdicts.items() if v[0] != "pass"}
    assert not failing


def test_every_case_names_its_point_and_the_source_of_its_shape() -> None:
    assert CASES
    for case in CASES:
        assert isinstance(case["point"], int) and 1 <= case["point"] <= 14, case["name"]
        assert case["source"] and case["expect"], case["name"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(
    case: dict[str, Any],
    sandbox: Sandbox,
    base_verdicts: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    sandbox.tenant = RecordedTenant(build_case(case, tmp_path / "tenant"))
    ctx, _ = collect(sandbox, **case.get("config", {}))
    got = verdicts(ctx, case.get("profile", "hipaa"))
    for control, expected in case["expect"].items():
        status, reason = got[control]
        assert status == expected, f"{control}: {status}: {reason}"
        for text in case.get("reason_contains", {}).get(control, []):
            assert text in reason, f"{control}: {reason!r} lacks {text!r}"
    if case.get("profile", "hipaa") == "hipaa":
        # One changed answer costs only the controls that read it.
        others = {c: got[c][0] for c in got if c not in case["expect"]}
        assert others == {c: base_verdicts[c][0] for c in others}


def test_the_admin_api_anchors_and_region_on_published_answers(sandbox: Sandbox) -> None:
    sandbox.tenant = RecordedTenant(BASE)
    sandbox.log.clear()
    collect(sandbox)
    tenant = sandbox.tenant
    exo = {e.anchor for e in sandbox.log if e.role == "exchange" and e.method == "POST"}
    assert exo == {f"APP:{SYSTEM_MAILBOX}@{tenant.tenant_id}"}
    regional = [e for e in sandbox.log if e.role == "compliance-regional"]
    assert regional and {e.anchor for e in regional} == {
        f"UPN:{SYSTEM_MAILBOX}@{tenant.default_domain}"
    }
    front = [(e.method, e.status) for e in sandbox.log if e.role == "compliance"]
    assert front == [("GET", 302)]


@pytest.mark.parametrize("cloud", ["global", "gcc", "gcc-high", "dod"])
def test_each_cloud_asks_for_tokens_the_documented_resources_grant(cloud: str) -> None:
    # The sandbox grants a token only for the resources its own table (written from Microsoft's
    # documentation) names; a wrong host in the connector's cloud table fails the sign-in.
    with Sandbox(BASE) as served:
        ctx, connector = collect(served, cloud=cloud)
    # Graph, Exchange, Security & Compliance, Teams, and the tenant's SharePoint admin site.
    assert connector.stats["sign_ins"] == 5
    assert all(s.status == "ok" for s in ctx.sections), {
        s.name: s.reason for s in ctx.sections if s.status != "ok"
    }


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ("global", "fail"),
        ("gcc", "fail"),
        ("gcc-high", "not_applicable"),
        ("dod", "not_applicable"),
    ],
)
def test_agent_conditional_access_is_not_applicable_where_the_cloud_lacks_it(
    cloud: str, expected: str
) -> None:
    # fabrikam-clinic's policies use no agent condition: a gap in the commercial clouds, and
    # not applicable in GCC High and DoD, which have no Conditional Access for agents (as
    # ScubaGear reports MS.AAD.9.1 there). The cloud comes from [m365] cloud.
    with Sandbox(REPO / "fixtures" / "tenants" / "fabrikam-clinic") as served:
        ctx, _connector = collect(served, cloud=cloud)
    section = next(s for s in ctx.sections if s.name == "m365.entra.agent_conditional_access")
    status, reason = verdicts(ctx, "scuba")["m365.entra.risky-agents-blocked"]
    assert status == expected, reason
    if expected == "not_applicable":
        assert section.status == "not_applicable"
        assert f"not available in the {cloud} cloud" in reason, reason


def test_batch_items_throttled_inside_a_200_are_retried_on_published_answers() -> None:
    with Sandbox(BASE, faults=Faults(throttle_batch_items=3)) as served:
        ctx, connector = collect(served, limits={"retries": 4, "backoff_seconds": 0.05})
        throttled = [e for e in served.log if e.status == 429]
    assert throttled
    assert all(s.status == "ok" for s in ctx.sections)
    assert connector.stats["retries"] >= 1


def _cli(
    command: str, tenant: Path, tmp_path: Path, name: str, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """`commsaudit COMMAND` (audit or record) against `tenant` served by a sandbox, as a user
    runs it, with the config the sandbox prints."""
    with Sandbox(tenant) as served:
        config = tmp_path / f"{name}.toml"
        config.write_text(
            served.config_toml("client-secret")
            + f'break_glass_accounts = ["{BREAK_GLASS}"]\n'
            + '[policies]\ncontrols = ["m365.*"]\n'
            + f'[evidence]\nout = "{name}-out"\n'
        )
        return run_cli(
            command, "--config", config, "--format", "json", *args, cwd=tmp_path,
            env=served.environment(),
        )  # fmt: skip


def _statuses(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {r["control"]: r["status"] for r in json.loads(proc.stdout)["results"]}


def test_a_grouped_dlp_rule_through_the_cli_leaves_every_other_verdict_alone(
    tmp_path: Path,
) -> None:
    """The acceptance run: a recorded tenant whose DLP rule has the grouped key/value shape
    audits like the base tenant, control for control; with an unreadable rule the DLP controls
    are error (naming the rule and the part) and the run exits 3, not 0."""
    grouped = next(c for c in CASES if c["name"] == "06-grouped-sensitive-types-as-rest-pairs")
    unreadable = next(c for c in CASES if c["name"] == "06-unreadable-sensitive-type-shape")
    runs = {
        "base": _cli("audit", BASE, tmp_path, "base"),
        "grouped": _cli("audit", build_case(grouped, tmp_path / "g"), tmp_path, "grouped"),
        "unreadable": _cli("audit", build_case(unreadable, tmp_path / "u"), tmp_path, "unreadable"),
    }
    statuses = {name: _statuses(proc) for name, proc in runs.items()}
    assert runs["base"].returncode == 0, runs["base"].stderr
    assert statuses["grouped"] == statuses["base"]
    assert runs["grouped"].returncode == 0
    dlp = {"m365.dlp.phi-protection", "m365.dlp.all-workloads"}
    assert {c for c, s in statuses["unreadable"].items() if s == "error"} == dlp
    assert {c: s for c, s in statuses["unreadable"].items() if c not in dlp} == {
        c: s for c, s in statuses["base"].items() if c not in dlp
    }
    assert runs["unreadable"].returncode == 3
    reasons = [
        r["reason"] for r in json.loads(runs["unreadable"].stdout)["results"] if r["control"] in dlp
    ]
    assert all(
        "Get-DlpComplianceRule" in r and "ContentContainsSensitiveInformation" in r for r in reasons
    )


def test_a_recording_of_the_published_tenant_replays_with_identical_verdicts(
    tmp_path: Path,
) -> None:
    first = _cli("record", BASE, tmp_path, "live", "--tenants", tmp_path / "recorded")
    assert first.returncode == 0, first.stderr
    recorded = next((tmp_path / "recorded").iterdir())
    second = _cli("audit", recorded, tmp_path, "replay")
    assert _statuses(second) == _statuses(first)
