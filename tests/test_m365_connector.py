"""The Microsoft 365 connector against the sandbox: azure-identity, msgraph-sdk and the admin
API client over real HTTPS sockets on 127.0.0.1, with the faults the sandbox can inject."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from m365_sandbox import FAST, sandbox_config

from auditor.model.section import Section
from connectors.base import CollectContext
from connectors.m365.connector import MAILBOX_FIELDS, M365Connector
from connectors.m365.exchange import AdminApi, regional_endpoint
from connectors.m365.http import (
    Destinations,
    GuardedTransport,
    Limits,
    ReadOnlyViolation,
    make_clients,
    on_request_sent,
)
from connectors.m365.sandbox.server import SECRET_ENV, Faults, Sandbox
from connectors.m365.teams import CONFIGURATIONS

from conftest import DemoRun
from helpers import REPO, member_json, members, run_cli

TENANTS = REPO / "fixtures" / "tenants"


def _config(sandbox: Sandbox, auth: str, **extra: Any) -> dict[str, Any]:
    return sandbox_config(sandbox, auth, **extra)


def _collect(
    sandbox: Sandbox, auth: str = "client-secret", **extra: Any
) -> tuple[CollectContext, M365Connector]:
    connector = M365Connector(_config(sandbox, auth, **extra), Path())
    connector.environ = {SECRET_ENV: sandbox.client_secret}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
    )
    asyncio.run(connector.collect(ctx))
    return ctx, connector


def _sections(ctx: CollectContext) -> dict[str, Section]:
    return {s.name: s for s in ctx.sections}


@pytest.fixture
def fabrikam() -> Iterator[Sandbox]:
    with Sandbox(TENANTS / "fabrikam-clinic", page_size=10) as sandbox:
        yield sandbox


@pytest.mark.parametrize("auth", ["client-secret", "certificate", "workload-identity"])
def test_each_sign_in_method_reads_the_whole_tenant(fabrikam: Sandbox, auth: str) -> None:
    ctx, connector = _collect(fabrikam, auth, read_sharepoint_admin=True)
    sections = _sections(ctx)
    # SharePoint refuses app-only tokens got with a client secret: that one read is not tried.
    unread = {"m365.sharepoint.tenant"} if auth == "client-secret" else set()
    assert {n for n, s in sections.items() if s.status != "ok"} == unread, {
        n: s.reason for n, s in sections.items() if s.status != "ok"
    }
    if unread:
        assert "client secret" in (sections["m365.sharepoint.tenant"].reason or "")
    assert ctx.subjects == [("m365", "tenant", "fabrikamclinic.onmicrosoft.com")]
    assert connector.stats["auth"] == auth
    # One sign-in per audience: Graph, Exchange, Security & Compliance, Teams, SharePoint's admin
    # site.
    assert connector.stats["sign_ins"] == (4 if unread else 5)
    assert fabrikam.refused == []


def test_pages_beyond_the_first_are_followed(fabrikam: Sandbox) -> None:
    ctx, _ = _collect(fabrikam)
    users = json.loads(next(r.body for r in ctx.raw if r.path == "m365/graph/v1.0/users.json"))
    assert len(users["value"]) == 64
    assert len(fabrikam.requests_for("graph/v1.0/users")) == 7  # 64 users, 10 a page
    mailboxes = json.loads(next(r.body for r in ctx.raw if r.path == "m365/exo/Get-Mailbox.json"))
    assert len(mailboxes) == 63 and len(fabrikam.requests_for("exo/Get-Mailbox")) == 7
    assert len(_sections(ctx)["m365.exo.mailboxes"].data) == 63


def test_mailboxes_are_read_with_their_audit_fields_only(tmp_path: Path) -> None:
    tenant = tmp_path / "fabrikam-clinic"
    shutil.copytree(TENANTS / "fabrikam-clinic", tenant)
    recorded = tenant / "exo" / "Get-Mailbox.json"
    mailboxes = json.loads(recorded.read_text())
    for mailbox in mailboxes:
        mailbox["ForwardingSmtpAddress"] = "smtp:someone@example.org"
    recorded.write_text(json.dumps(mailboxes))
    with Sandbox(tenant, page_size=10) as sandbox:
        ctx, _ = _collect(sandbox)
        asked = [urllib.parse.unquote(e.path) for e in sandbox.requests_for("exo/Get-Mailbox")]
    assert len(asked) == 7  # every page, the next links included, keeps the $select
    assert all(f"$select={','.join(MAILBOX_FIELDS)}" in url for url in asked), asked
    kept = next(r for r in ctx.raw if r.path == "m365/exo/Get-Mailbox.json")
    assert "$select=Identity," in kept.request["url"]
    read = json.loads(kept.body)
    assert len(read) == 63
    assert all(
        "ForwardingSmtpAddress" not in m and m["AuditEnabled"] in (True, False) for m in read
    )
    assert {k.split("@")[0] for m in read for k in m} <= set(MAILBOX_FIELDS)

    with Sandbox(tenant, page_size=100) as sandbox:
        ctx, _ = _collect(sandbox, mailbox_properties=["ForwardingSmtpAddress"])
    mailboxes = _sections(ctx)["m365.exo.mailboxes"].data
    assert mailboxes[0]["ForwardingSmtpAddress"] == "smtp:someone@example.org"
    assert "AuditEnabled" in mailboxes[0]


def test_policies_page_too() -> None:
    with Sandbox(TENANTS / "contoso-health", page_size=2) as sandbox:
        ctx, _ = _collect(sandbox, "certificate")
        # Five policies at two a page: three pages, and every policy read.
        assert len(sandbox.requests_for("graph/v1.0/identity/conditionalAccess/policies")) == 3
        assert len(_sections(ctx)["m365.entra.conditional_access"].data) == 5


def test_single_objects_share_batch_calls(fabrikam: Sandbox) -> None:
    _collect(fabrikam)
    batches = [e for e in fabrikam.log if e.role == "graph" and e.method == "POST"]
    batched = [e for e in fabrikam.log if e.path.startswith("$batch ")]
    assert batches and len(batched) >= 5
    assert {e.recorded for e in batched} >= {
        "graph/v1.0/policies/authorizationPolicy",
        "graph/v1.0/admin/sharepoint/settings",
    }


def test_excluded_groups_are_looked_up_while_the_users_are_still_being_read() -> None:
    # The lookups wait for the policies, not for the longest collection (on a large tenant,
    # the last users page): seven users pages at 30 ms each take far longer than the policies.
    faults = Faults(latency_ms=30)
    with Sandbox(TENANTS / "fabrikam-clinic", page_size=10, faults=faults) as sandbox:
        ctx, _ = _collect(sandbox)
        order = [e.recorded or e.path for e in sandbox.log]
    assert _sections(ctx)["m365.entra.conditional_access"].status == "ok"
    groups = [i for i, r in enumerate(order) if r.startswith("graph/v1.0/groups/")]
    users = [i for i, r in enumerate(order) if r == "graph/v1.0/users"]
    assert groups and len(users) == 7
    assert max(groups) < users[-1], order


def test_the_admin_api_is_called_as_working_public_clients_call_it(fabrikam: Sandbox) -> None:
    """Exchange Online: POSTs straight to its host, anchored by tenant id. Security &
    Compliance: the module-file GET to the front door first, then POSTs to the region its
    redirect names, anchored by UPN on the initial domain (CIPP-API New-ExoRequest;
    ScubaGear Get-ComplianceApiEndpoint)."""
    _collect(fabrikam)
    tenant = fabrikam.tenant
    exo = [e for e in fabrikam.log if e.recorded and e.recorded.startswith("exo/")]
    assert exo and {e.role for e in exo} == {"exchange"}
    assert {e.anchor for e in exo} == {
        f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant.tenant_id}"
    }
    front = [e for e in fabrikam.log if e.role == "compliance"]
    assert [(e.method, e.status) for e in front] == [("GET", 302)]
    assert front[0].path.endswith(f"/AdminApi/v1.0/{tenant.tenant_id}/EXOModuleFile")
    regional = [e for e in fabrikam.log if e.role == "compliance-regional"]
    assert regional and all(e.method == "POST" and e.status == 200 for e in regional)
    # The region's name came from the redirect's host (sbx01b.admin.protection.outlook.com).
    assert all(e.path.startswith("/sbx01b/adminapi/beta/") for e in regional)
    assert {e.anchor for e in regional} == {
        f"UPN:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant.default_domain}"
    }


def test_the_region_is_the_first_label_of_the_redirect_host_on_the_rest_port() -> None:
    # ScubaGear's comment: the redirect names <prefix>.admin.protection.outlook.com:446; the
    # REST API of that region is <prefix>.ps.compliance.protection.outlook.com on 443.
    template = "https://{prefix}.ps.compliance.protection.outlook.com"
    front = "https://ps.compliance.protection.outlook.com"
    named = "https://nam12b.admin.protection.outlook.com:446/AdminApi/v1.0/t/EXOModuleFile"
    assert regional_endpoint(template, named, front) == (
        "https://nam12b.ps.compliance.protection.outlook.com"
    )
    # A redirect that names no usable host leaves the client at the front door.
    assert regional_endpoint(template, "https://-bad-.example/x", front) is None
    assert regional_endpoint(template, "/relative/path", "https://127.0.0.1:1") is None


def _admin_api(sandbox: Sandbox, backend: str | None) -> AdminApi:
    from azure.identity import ClientSecretCredential

    scope = "https://ps.compliance.protection.outlook.com/.default"
    credential = ClientSecretCredential(
        sandbox.tenant.tenant_id,
        sandbox.client_id,
        sandbox.client_secret,
        authority=sandbox.origin("login"),
        disable_instance_discovery=True,
        connection_verify=str(sandbox.files["ca"]),
    )
    token = credential.get_token(scope).token

    async def bearer(_scope: str) -> str:
        return token

    # The front door and the region's listener: where the endpoints send requests.
    listeners = Destinations.of(
        [sandbox.origin("compliance"), sandbox.origin("compliance-regional")]
    )
    _transport, _graph, admin = make_clients(Limits(retries=0), str(sandbox.files["ca"]), listeners)
    return AdminApi(
        admin,
        bearer,
        kind="compliance",
        base=sandbox.origin("compliance"),
        scope=scope,
        tenant_id=sandbox.tenant.tenant_id,
        now=lambda: dt.datetime.now(dt.UTC),
        backend=backend,
    )


def test_a_redirected_post_is_never_followed_the_region_is_asked_again(
    fabrikam: Sandbox,
) -> None:
    api = _admin_api(fabrikam, fabrikam.endpoints()["compliance_backend"])
    # Not discovered yet: the POST goes to the front door, which redirects it.
    found = asyncio.run(api.invoke("Get-DlpCompliancePolicy"))
    assert found.ok, found.error
    steps = [(e.role, e.method, e.status) for e in fabrikam.log if e.role.startswith("compl")]
    assert steps == [
        ("compliance", "POST", 302),  # redirected: not followed with the token
        ("compliance", "GET", 302),  # the module-file GET names the region
        ("compliance-regional", "POST", 200),
    ]


def test_an_api_without_regions_reports_a_redirect_instead_of_following_it(
    fabrikam: Sandbox,
) -> None:
    found = asyncio.run(_admin_api(fabrikam, None).invoke("Get-DlpCompliancePolicy"))
    assert not found.ok
    assert "answered 302: redirected to 127.0.0.1:" in (found.error or "")
    assert "a token is never sent after a redirect" in (found.error or "")
    assert not [e for e in fabrikam.log if e.role == "compliance-regional"]


def test_throttling_is_retried_after_the_wait_it_asks_for() -> None:
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(throttle_every=4)) as sandbox:
        ctx, connector = _collect(
            sandbox, "certificate", read_sharepoint_admin=True, limits={**FAST, "retries": 4}
        )
        assert all(s.status == "ok" for s in ctx.sections)
        assert sum(1 for e in sandbox.log if e.status == 429) >= 5
        assert connector.stats["retries"] >= 5


def test_batch_items_throttled_inside_a_200_are_asked_again() -> None:
    """Graph's throttling guidance: an item of a $batch can be 429 with its own Retry-After
    while the envelope is 200; retry those items, do not report them as errors."""
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(throttle_batch_items=2)) as sandbox:
        # Every second item is throttled, in each batch asked: about half are left after each
        # round, so fifteen single reads need up to log2(15) + 1 rounds.
        ctx, connector = _collect(
            sandbox, "certificate", read_sharepoint_admin=True, limits={**FAST, "retries": 6}
        )
        throttled = [e for e in sandbox.log if e.status == 429 and e.path.startswith("$batch")]
    assert throttled, "the sandbox throttled no batch item"
    assert all(s.status == "ok" for s in ctx.sections), {
        s.name: s.reason for s in ctx.sections if s.status != "ok"
    }
    for item in throttled:  # each throttled item was answered later, in another batch
        answered = [e for e in sandbox.log if e.path == item.path and e.status == 200]
        assert answered, item.path
    # Each round asks again, in one $batch, every item still throttled: an item asked k times
    # took k - 1 rounds, each counted as a retry.
    asked = max(sum(1 for e in sandbox.log if e.path == item.path) for item in throttled)
    assert connector.stats["retries"] >= asked - 1 >= 1


def test_batch_items_that_stay_throttled_are_errors_of_their_own_sections() -> None:
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(throttle_batch_items=1)) as sandbox:
        ctx, _ = _collect(sandbox, limits={**FAST, "retries": 1})
    sections = _sections(ctx)
    assert sections["m365.sharepoint.settings"].status == "error"
    assert "answered 429" in (sections["m365.sharepoint.settings"].reason or "")
    assert sections["m365.exo.transport_config"].status == "ok"  # not a batch item


def test_a_failure_that_outlasts_the_retries_costs_only_its_sections() -> None:
    with Sandbox(
        TENANTS / "fabrikam-clinic", faults=Faults(fail=("exo/Get-TransportConfig",))
    ) as sandbox:
        ctx, _ = _collect(sandbox, "certificate", read_sharepoint_admin=True)
    sections = _sections(ctx)
    failed = {n for n, s in sections.items() if s.status != "ok"}
    assert failed == {"m365.exo.transport_config"}
    assert "exo/Get-TransportConfig answered 503" in (
        sections["m365.exo.transport_config"].reason or ""
    )


def test_malformed_json_is_an_error_not_a_pass() -> None:
    with Sandbox(
        TENANTS / "fabrikam-clinic", faults=Faults(malformed=("graph/v1.0/domains",))
    ) as sandbox:
        ctx, _ = _collect(sandbox)
    sections = _sections(ctx)
    assert sections["m365.entra.domains"].status == "error"
    assert "malformed JSON" in (sections["m365.entra.domains"].reason or "")
    assert sections["m365.exo.dkim_domains"].status == "error"
    assert sections["m365.exo.transport_config"].status == "ok"


def test_a_dropped_connection_is_an_error_with_the_reason() -> None:
    with Sandbox(
        TENANTS / "fabrikam-clinic", faults=Faults(drop=("compliance/Get-DlpComplianceRule",))
    ) as sandbox:
        ctx, _ = _collect(sandbox)
    dlp = _sections(ctx)["m365.purview.dlp"]
    assert dlp.status == "error"
    assert "compliance/Get-DlpComplianceRule answered no response" in (dlp.reason or "")


def test_a_403_names_the_missing_permission() -> None:
    forbid = (
        "graph/v1.0/policies/authorizationPolicy",
        "exo/Get-IRMConfiguration",
        "graph/beta/identity/conditionalAccess/policies",
    )
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(forbid=forbid)) as sandbox:
        ctx, _ = _collect(sandbox)
    sections = _sections(ctx)
    assert "Microsoft Graph application permission Policy.Read.All" in (
        sections["m365.entra.authorization_policy"].reason or ""
    )
    agents = sections["m365.entra.agent_conditional_access"]
    assert agents.status == "error"
    assert "Policy.Read.All" in (agents.reason or "")
    assert "Exchange.ManageAsApp" in (sections["m365.exo.irm_configuration"].reason or "")


def test_a_missing_licence_is_named() -> None:
    with Sandbox(TENANTS / "fabrikam-clinic") as sandbox:
        sandbox.tenant._cache[
            "graph/v1.0/reports/authenticationMethods/userRegistrationDetails"
        ] = None
        ctx, _ = _collect(sandbox)
    section = _sections(ctx)["m365.entra.user_registration"]
    assert section.status == "error"
    assert "Microsoft Entra ID P1 or P2" in (section.reason or "")


@pytest.mark.parametrize("auth", ["client-secret", "certificate"])
def test_every_audience_signs_in_beside_the_first_with_one_openid_configuration(
    auth: str,
) -> None:
    # Each admin API's chain starts with its own token: those requests go out as soon as the
    # first one does, not after the Graph token is back (and Graph's reads with it). They share
    # the one MSAL application, so the OpenID configuration is read once.
    faults = Faults(latency_ms=150)
    with Sandbox(TENANTS / "contoso-health", faults=faults) as sandbox:
        _ctx, connector = _collect(sandbox, auth)
        log = [(e.role, e.method, e.path) for e in sandbox.log]
    discovery = [e for e in log if e[0] == "login" and e[1] == "GET"]
    tokens = [i for i, e in enumerate(log) if e[0] == "login" and e[1] == "POST"]
    first_graph = next(i for i, e in enumerate(log) if e[0] == "graph")
    assert len(discovery) == 1, discovery
    assert connector.stats["sign_ins"] == len(tokens) == 4  # Graph, EXO, S&C, Teams
    assert sorted(tokens)[3] < first_graph, log


def test_a_run_reads_only_the_answers_its_controls_need() -> None:
    # The hipaa controls read no Teams, Defender or PIM setting: none of those is asked for,
    # Teams is not signed in to, and every section a hipaa control reads is there and judged
    # as in a run that reads everything.
    from auditor.audit import wanted_sections
    from auditor.policy import load_policies
    from auditor.resources import policies_dir

    hipaa = wanted_sections(load_policies([policies_dir()]).select("hipaa", []))
    with Sandbox(TENANTS / "contoso-health") as sandbox:
        everything, _ = _collect(sandbox)
        whole = {(e.role, e.recorded or e.path) for e in sandbox.log}
        sandbox.log.clear()
        connector = M365Connector(_config(sandbox, "client-secret"), Path())
        connector.environ = {SECRET_ENV: sandbox.client_secret}
        ctx = CollectContext(
            connector="m365",
            now=dt.datetime.now(dt.UTC),
            deadline=time.monotonic() + 120,
            wanted=hipaa,
        )
        asyncio.run(connector.collect(ctx))
        planned = {(e.role, e.recorded or e.path) for e in sandbox.log}
    assert planned < whole
    skipped = {r for _role, r in whole - planned if r}
    assert {r for r in skipped if r.startswith("teams/")} == {f"teams/{c}" for c in CONFIGURATIONS}
    assert "exo/Get-SafeLinksPolicy" in skipped and "exo/Get-Mailbox" not in skipped
    assert not [r for _role, r in planned if r and r.startswith("teams/")]
    assert connector.stats["sign_ins"] == 3  # Graph, Exchange, Security & Compliance
    kept = {s.name: s for s in ctx.sections}
    full = {s.name: s for s in everything.sections}
    needed = {n for n in hipaa if n.startswith("m365.")}
    assert needed <= set(kept)
    for name in needed:
        assert (kept[name].status, kept[name].data) == (full[name].status, full[name].data), name
    assert not [n for n in kept if n.startswith("m365.teams.")]


def test_wrong_secret_is_a_readable_sign_in_error(fabrikam: Sandbox) -> None:
    connector = M365Connector(_config(fabrikam, "client-secret"), Path())
    connector.environ = {SECRET_ENV: "not-the-secret"}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 60
    )
    with pytest.raises(Exception, match="client secret is wrong or expired"):
        asyncio.run(connector.collect(ctx))


def test_a_wrong_secret_is_said_once_on_the_command_line(fabrikam: Sandbox, tmp_path: Path) -> None:
    # Four audiences sign in side by side and all four fail: the user reads one line saying
    # what to do, not the SDK's warning for each of them (those are -v's).
    (tmp_path / "commsaudit.toml").write_text(fabrikam.config_toml())
    env = {SECRET_ENV: "not-the-secret"}
    quiet = run_cli("audit", "--format", "json", cwd=tmp_path, env=env)
    loud = run_cli("-v", "audit", "--format", "json", "--out", "v", cwd=tmp_path, env=env)
    assert quiet.returncode == loud.returncode == 3, quiet.stderr
    failed = [line for line in quiet.stderr.splitlines() if line.startswith("commsaudit: m365")]
    assert failed[-1].startswith("commsaudit: m365: failed: sign-in failed: the client secret is")
    assert "AADSTS7000215" not in "".join(failed[:-1])
    assert "WARNING" not in quiet.stderr, quiet.stderr
    assert "WARNING azure.identity" in loud.stderr


def test_the_transport_refuses_anything_but_reads() -> None:
    class Nowhere(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise AssertionError(f"{request.method} {request.url} was sent")

    async def send(request: httpx.Request) -> None:
        await GuardedTransport(Nowhere, Limits()).handle_async_request(request)

    writes = [
        httpx.Request(
            "PATCH", "https://graph.microsoft.com/v1.0/policies/authorizationPolicy", json={}
        ),
        httpx.Request(
            "POST",
            "https://graph.microsoft.com/v1.0/$batch",
            json={"requests": [{"id": "1", "method": "DELETE", "url": "/users/x"}]},
        ),
        httpx.Request(
            "POST",
            "https://outlook.office365.com/adminapi/beta/t/InvokeCommand",
            json={"CmdletInput": {"CmdletName": "Set-TransportConfig", "Parameters": {}}},
        ),
        httpx.Request("DELETE", "https://graph.microsoft.com/v1.0/users/x"),
    ]
    for request in writes:
        with pytest.raises(ReadOnlyViolation):
            asyncio.run(send(request))


def _trust(sandbox: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sandbox.files["ca"])


def _graph_token(sandbox: Sandbox) -> str:
    answer = httpx.post(
        f"{sandbox.origin('login')}/{sandbox.tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=_trust(sandbox),
    )
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


def test_large_answers_travel_gzipped_to_a_client_that_accepts_it() -> None:
    with Sandbox(TENANTS / "fabrikam-clinic", page_size=100) as sandbox:
        url = f"{sandbox.origin('graph')}/v1.0/users"
        headers = {"Authorization": f"Bearer {_graph_token(sandbox)}"}
        with httpx.Client(verify=_trust(sandbox)) as client:
            plain = client.get(url, headers={**headers, "Accept-Encoding": "identity"})
            packed = client.get(url, headers={**headers, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content)
    assert packed.json() == plain.json() and len(plain.json()["value"]) == 64


def test_latency_is_the_whole_time_an_answer_takes() -> None:
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(latency_ms=300)) as sandbox:
        started = time.monotonic()
        httpx.get(f"{sandbox.origin('graph')}/v1.0/organization", verify=_trust(sandbox))
        assert time.monotonic() - started >= 0.3


def test_the_transport_says_when_a_request_is_on_the_wire() -> None:
    """What lets the Graph reader ask for the next page before it reads this one."""
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(latency_ms=200)) as sandbox:
        events: list[str] = []

        async def run() -> None:
            transport, graph_http, _ = make_clients(
                Limits(), str(sandbox.files["ca"]), Destinations.of([sandbox.origin("graph")])
            )
            try:
                on_request_sent.set(lambda: events.append("sent"))
                await graph_http.get(f"{sandbox.origin('graph')}/v1.0/organization")
                events.append("answered")
            finally:
                await transport.aclose()

        asyncio.run(run())
    assert events == ["sent", "answered"]


def test_the_connector_sends_no_write(fabrikam: Sandbox) -> None:
    _collect(fabrikam, "certificate")
    assert fabrikam.refused == []
    for entry in fabrikam.log:
        if entry.method != "GET":
            assert entry.method == "POST"
            assert (
                entry.path.endswith(("/oauth2/v2.0/token", "/$batch", "/InvokeCommand"))
                or "InvokeCommand?" in entry.path
            )


def test_fabrikam_audit_through_the_cli_fails_each_planted_problem(tmp_path: Path) -> None:
    with Sandbox(TENANTS / "fabrikam-clinic", page_size=25) as sandbox:
        config = tmp_path / "commsaudit.toml"
        config.write_text(
            sandbox.config_toml("client-secret") + '\n[evidence]\nout = "out"\n'
            '[policies]\ncontrols = ["m365.*", "provider.microsoft.baa"]\n'
        )
        proc = run_cli(
            "audit", "--config", config, "--format", "json", cwd=tmp_path, env=sandbox.environment()
        )
    assert proc.returncode == 1, proc.stderr
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    planted = {
        "m365.mfa.all-users": ("m365.entra.conditional_access", "/0/enforced"),
        "m365.exo.smtp-auth-disabled": (
            "m365.exo.transport_config",
            "/0/SmtpClientAuthenticationDisabled",
        ),
        "m365.dlp.phi-protection": ("m365.purview.dlp", "/0/Mode"),
        "m365.audit.unified-log": (
            "m365.exo.admin_audit_log_config",
            "/0/UnifiedAuditLogIngestionEnabled",
        ),
        "m365.exo.connectors-require-tls": ("m365.exo.inbound_connectors", "/0/RequireTls"),
        "m365.exo.external-forwarding-blocked": (
            "m365.exo.remote_domains",
            "/0/AutoForwardEnabled",
        ),
    }
    for control, (section, pointer) in planted.items():
        result = results[control]
        assert result["status"] == "fail", (control, result["reason"])
        assert any(
            e["section"] == section and e["pointer"] == pointer for e in result["evidence"]
        ), control
    group = next(
        e
        for e in results["m365.mfa.all-users"]["evidence"]
        if e["pointer"] == "/1/unexpected_exclusions"
    )
    assert group["value"][0]["name"] == "Contractors"
    # No Microsoft BAA on file: the provider control fails rather than being inherited.
    assert results["provider.microsoft.baa"]["status"] == "fail"
    bundle = next((tmp_path / "out").glob("*.zip"))
    content = members(bundle)
    assert "raw/m365/exo/Get-TransportConfig.json" in content
    assert (
        json.loads(content["raw/m365/tenant.json"])["default_domain"]
        == "fabrikamclinic.onmicrosoft.com"
    )
    secret = sandbox.client_secret
    assert all(secret.encode() not in data for data in content.values())


def test_demo_audits_contoso_through_the_sandbox(demo_run: DemoRun) -> None:
    manifest = member_json(demo_run.bundle, "manifest.json")
    m365 = manifest["scope"]["connectors"]["m365"]
    assert m365["status"] == "ok" and m365["scope"]["auth"] == "certificate"
    assert m365["scope"]["endpoints"]["graph"].startswith("https://127.0.0.1:")
    names = set(members(demo_run.bundle))
    assert "raw/m365/graph/v1.0/identity/conditionalAccess/policies.json" in names
    assert "raw/m365/compliance/Get-DlpCompliancePolicy.json" in names
    statuses = {r["control"]: r["status"] for r in demo_run.results["results"]}
    assert statuses["m365.mfa.all-users"] == "pass"
    assert statuses["m365.retention.teams"] == "waived"
    assert statuses["provider.microsoft.baa"] == "inherited"


def test_sandbox_command_prints_only_the_config_and_serves_until_stopped(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditor",
            "sandbox",
            "m365",
            str(TENANTS / "contoso-health"),
            "--page-size",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        lines = []
        while not (lines and lines[-1].startswith("export ")):
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "sandbox exited"
            lines.append(line)
        toml = "".join(line for line in lines if not line.startswith("export "))
        env = dict(
            line.removeprefix("export ").strip().split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        assert list(env) == [SECRET_ENV]
        config = tmp_path / "commsaudit.toml"
        config.write_text(
            toml + 'break_glass_accounts = ["breakglass01@contoso-health.onmicrosoft.com"]\n'
            '[evidence]\nout = "out"\n[policies]\ncontrols = ["m365.mfa.*"]\n'
        )
        proc = run_cli("audit", "--config", config, "--format", "json", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert {r["status"] for r in json.loads(proc.stdout)["results"]} == {"pass"}
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0


def test_permissions_lists_the_least_privilege_setup(tmp_path: Path) -> None:
    proc = run_cli("permissions", cwd=tmp_path)
    for needle in (
        "Policy.Read.All",
        "AuditLog.Read.All",
        "RoleManagement.Read.Directory",
        "SharePointTenantSettings.Read.All",
        "Exchange.ManageAsApp",
        "Global Reader",
        "az ad app permission admin-consent",
        "az ad app credential reset",
    ):
        assert needle in proc.stdout
    # Every Graph permission listed is also granted by the steps it prints.
    listed = re.findall(r"Microsoft Graph application permission (\S+):", proc.stdout)
    steps = proc.stdout.split("Grant them without PowerShell", 1)[1]
    assert len(listed) >= 8
    for permission in listed:
        assert f"    {permission} \\\n" in steps, permission
    assert '--api "$EXO" --api-permissions' in steps


def _statuses(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {r["control"]: r["status"] for r in json.loads(proc.stdout)["results"]}


def test_record_writes_a_pseudonymised_tenant_the_sandbox_can_serve(tmp_path: Path) -> None:
    controls = '[policies]\ncontrols = ["m365.*"]\n[evidence]\nout = "out"\n'
    with Sandbox(TENANTS / "fabrikam-clinic", page_size=25) as sandbox:
        config = tmp_path / "commsaudit.toml"
        config.write_text(sandbox.config_toml("client-secret") + controls)
        first = run_cli(
            "record",
            "--config",
            config,
            "--tenants",
            tmp_path / "recorded",
            "--pseudonymise",
            "--format",
            "json",
            cwd=tmp_path,
            env=sandbox.environment(),
        )
    assert first.returncode == 1, first.stderr
    recorded = tmp_path / "recorded" / "fabrikamclinic.onmicrosoft.com"
    assert (recorded / "tenant.json").is_file() and (
        recorded / "exo" / "Get-Mailbox.json"
    ).is_file()
    text = "".join(p.read_text() for p in recorded.rglob("*.json"))
    for name in ("frontdesk@fabrikamclinic.com", "Practice Owner", "owner@fabrikamclinic.com"):
        assert name not in text
    assert "Contractors" in text  # groups are not people
    with Sandbox(recorded, page_size=25) as replay:
        config2 = tmp_path / "again.toml"
        config2.write_text(replay.config_toml("client-secret") + controls)
        second = run_cli(
            "audit", "--config", config2, "--format", "json", cwd=tmp_path, env=replay.environment()
        )
    assert _statuses(second) == _statuses(first)
    unregistered = next(
        r
        for r in json.loads(second.stdout)["results"]
        if r["control"] == "m365.mfa.registered-users"
    )
    assert all(
        e["context"]["userPrincipalName"].startswith("user-") for e in unregistered["evidence"]
    )


def test_policies_are_read_with_their_distribution_detail(fabrikam: Sandbox) -> None:
    # The sandbox answers as the service does without -DistributionDetail (status Pending,
    # retention locations empty): the connector must ask for the detail.
    ctx, _ = _collect(fabrikam)
    dlp = _sections(ctx)["m365.purview.dlp"].data
    assert [p["DistributionStatus"] for p in dlp] == ["Success"]


def test_the_sandbox_answers_pending_without_distribution_detail(fabrikam: Sandbox) -> None:
    from connectors.m365.sandbox.server import _without_distribution_detail

    policy = {"Name": "p", "DistributionStatus": "Success", "ExchangeLocation": [{"Name": "All"}]}
    shown = _without_distribution_detail("Get-RetentionCompliancePolicy", policy)
    assert shown == {"Name": "p", "DistributionStatus": "Pending", "ExchangeLocation": []}
    assert _without_distribution_detail("Get-DlpCompliancePolicy", policy)["ExchangeLocation"]
