"""Microsoft Teams without PowerShell (#17, MS.TEAMS.*): the Teams admin API read through the
connector, the sandbox serving it, the five `m365.teams.*` sections and the fourteen scuba-only
controls on them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from m365_sandbox import sandbox_config

from auditor.model.errors import InputError
from connectors.base import CollectContext
from connectors.m365.clouds import CLOUDS, TEAMS_RESOURCE, endpoints_for
from connectors.m365.connector import M365Connector
from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.http import Destinations, Limits, ReadOnlyViolation, make_clients
from connectors.m365.normalise import M365Settings, normalise
from connectors.m365.sandbox.server import SECRET_ENV, Faults, Sandbox
from connectors.m365.teams import CONFIGURATIONS, TeamsApi

from conftest import ScubaDemo
from helpers import REPO, run_cli
from m365_verdicts import NOW, evaluate_fetched

TENANTS = REPO / "fixtures" / "tenants"
PUBLISHED = REPO / "tests" / "data" / "m365-published" / "base"
FEDERATION = "teams/Skype.Policy/configurations/TenantFederationSettings"
MEETINGS = "teams/Skype.Policy/configurations/TeamsMeetingPolicy"
# SCuBA policy -> the control that evaluates it.
CONTROLS = {
    "MS.TEAMS.1.1v1": "m365.teams.external-control-blocked",
    "MS.TEAMS.1.2v2": "m365.teams.anonymous-cannot-start-meetings",
    "MS.TEAMS.1.3v1": "m365.teams.lobby-not-bypassed",
    "MS.TEAMS.1.4v1": "m365.teams.auto-admit-internal-only",
    "MS.TEAMS.1.5v1": "m365.teams.dial-in-waits-in-lobby",
    "MS.TEAMS.1.6v1": "m365.teams.cloud-recording-off",
    "MS.TEAMS.1.7v2": "m365.teams.live-events-not-always-recorded",
    "MS.TEAMS.2.1v2": "m365.teams.external-access-allow-list",
    "MS.TEAMS.2.2v2": "m365.teams.unmanaged-users-cannot-initiate",
    "MS.TEAMS.2.3v2": "m365.teams.unmanaged-contact-off",
    "MS.TEAMS.4.1v1": "m365.teams.email-into-channel-off",
    "MS.TEAMS.5.1v2": "m365.teams.microsoft-apps-allow-listed",
    "MS.TEAMS.5.2v2": "m365.teams.third-party-apps-allow-listed",
    "MS.TEAMS.5.3v2": "m365.teams.custom-apps-allow-listed",
}
# What the clinic's recorded Teams answers plant (fixtures/tenants/fabrikam-clinic/teams).
CLINIC = {
    "m365.teams.external-control-blocked": "fail",  # Tag:Front Desk lets guests take control
    "m365.teams.anonymous-cannot-start-meetings": "pass",
    "m365.teams.lobby-not-bypassed": "fail",  # Global admits Everyone
    "m365.teams.auto-admit-internal-only": "fail",
    "m365.teams.dial-in-waits-in-lobby": "fail",  # Tag:Front Desk lets callers skip the lobby
    "m365.teams.cloud-recording-off": "fail",
    "m365.teams.live-events-not-always-recorded": "fail",  # Global: AlwaysEnabled
    "m365.teams.external-access-allow-list": "fail",  # AllowAllKnownDomains
    "m365.teams.unmanaged-users-cannot-initiate": "fail",
    "m365.teams.unmanaged-contact-off": "fail",
    "m365.teams.email-into-channel-off": "fail",
    "m365.teams.microsoft-apps-allow-listed": "fail",  # BlockedAppList
    "m365.teams.third-party-apps-allow-listed": "fail",
    "m365.teams.custom-apps-allow-listed": "pass",
}


def _audit(scuba_demo: ScubaDemo, demo: str = "contoso-health") -> dict[str, dict[str, Any]]:
    return {r["control"]: r for r in scuba_demo(demo) if r["control"].startswith("m365.teams.")}


def test_the_sample_tenant_passes_every_teams_policy(scuba_demo: ScubaDemo) -> None:
    results = _audit(scuba_demo)
    assert {c: r["status"] for c, r in results.items()} == dict.fromkeys(CONTROLS.values(), "pass")
    assert {r["scuba"][0]: c for c, r in results.items()} == CONTROLS


def test_the_clinic_fails_what_it_plants(scuba_demo: ScubaDemo) -> None:
    results = _audit(scuba_demo, "fabrikam-clinic")
    assert {c: r["status"] for c, r in results.items()} == CLINIC
    # The failures name the policy and the value, as a person fixes them.
    assert (
        "/1/AllowPSTNUsersToBypassLobby is true"
        in (results["m365.teams.dial-in-waits-in-lobby"]["reason"])
    )
    assert "all_known_domains is true" in results["m365.teams.external-access-allow-list"]["reason"]


# -- the connector against the sandbox --------------------------------------------------------


def _config(sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    limits = {"retries": 1, "backoff_seconds": 0.05, "timeout_seconds": 10}
    return sandbox_config(sandbox, **{"limits": limits, **extra})


def _collect(sandbox: Sandbox) -> tuple[CollectContext, M365Connector]:
    connector = M365Connector(_config(sandbox), Path())
    connector.environ = {SECRET_ENV: sandbox.client_secret}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
    )
    asyncio.run(connector.collect(ctx))
    return ctx, connector


@pytest.fixture
def forbidden_teams() -> Iterator[Sandbox]:
    with Sandbox(TENANTS / "fabrikam-clinic", faults=Faults(forbid=("teams/*",))) as sandbox:
        yield sandbox


def test_a_forbidden_teams_read_makes_only_the_teams_sections_error_naming_the_role(
    forbidden_teams: Sandbox,
) -> None:
    ctx, _connector = _collect(forbidden_teams)
    sections = {s.name: s for s in ctx.sections}
    teams = {n: s for n, s in sections.items() if n.startswith("m365.teams.")}
    assert len(teams) == 5
    for section in teams.values():
        assert section.status == "error"
        assert "403" in (section.reason or "")
        assert "Global Reader" in (section.reason or "")  # what to grant
        assert "Skype and Teams Tenant Admin API" in (section.reason or "")
    # Everything else was read as usual (the SharePoint admin API is opt-in, and not asked for).
    unread = {"m365.sharepoint.tenant"}
    assert all(s.status == "ok" for n, s in sections.items() if n not in teams.keys() | unread)
    assert {e.recorded for e in forbidden_teams.log if e.role == "teams"} == {
        f"teams/{path}" for path in CONFIGURATIONS
    }


def test_forbidden_teams_reads_make_the_teams_controls_error(
    forbidden_teams: Sandbox, tmp_path: Path
) -> None:
    config = tmp_path / "commsaudit.toml"
    config.write_text(
        forbidden_teams.config_toml("client-secret")
        + '[policies]\ncontrols = ["m365.teams.*", "m365.exo.smtp-auth-disabled"]\n'
    )
    done = run_cli(
        "audit", "--config", config, "--profile", "scuba", "--format", "json", "--out",
        tmp_path / "out", cwd=tmp_path, env=forbidden_teams.environment(),
    )  # fmt: skip
    assert done.returncode != 0, done.stderr
    results = {r["control"]: r for r in json.loads(done.stdout)["results"]}
    teams = {c: r for c, r in results.items() if c.startswith("m365.teams.")}
    assert {r["status"] for r in teams.values()} == {"error"}
    assert len(teams) == 14
    assert all("Global Reader" in r["reason"] for r in teams.values())
    assert results["m365.exo.smtp-auth-disabled"]["status"] in ("pass", "fail")  # judged


def test_the_teams_reads_use_their_own_token_and_only_get(tmp_path: Path) -> None:
    with Sandbox(TENANTS / "contoso-health") as sandbox:
        ctx, connector = _collect(sandbox)
        log = list(sandbox.log)
    sections = {s.name: s for s in ctx.sections}
    assert all(sections[n].status == "ok" for n in sections if n.startswith("m365.teams."))
    teams = [e for e in log if e.role == "teams"]
    assert sorted(e.path for e in teams) == sorted(f"/{p}" for p in CONFIGURATIONS)
    assert {e.method for e in teams} == {"GET"} and {e.status for e in teams} == {200}
    assert connector.stats["sign_ins"] == 4  # the Teams resource is a fourth audience
    # Each answer is kept as evidence in the recorded-tenant layout, with the request made.
    raw = {r.path: r for r in ctx.raw}
    kept = raw["m365/teams/Skype.Policy/configurations/TeamsMeetingPolicy.json"]
    assert kept.request == {
        "method": "GET",
        "url": f"{sandbox.origin('teams')}/Skype.Policy/configurations/TeamsMeetingPolicy",
        "cmdlet": "Get-CsTeamsMeetingPolicy",
    }
    assert json.loads(kept.body)[0]["Identity"] == "Global"


def _client(sandbox: Sandbox) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(sandbox.files["ca"]))
    return httpx.Client(verify=context, timeout=10)


def _token(sandbox: Sandbox, client: httpx.Client, scope: str) -> str:
    tenant = sandbox.tenant.tenant_id
    answer = client.post(
        f"{sandbox.origin('login')}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": scope,
        },
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_the_sandbox_serves_teams_reads_only_to_a_teams_token_and_refuses_writes() -> None:
    with Sandbox(TENANTS / "contoso-health") as sandbox, _client(sandbox) as client:
        url = f"{sandbox.origin('teams')}/Skype.Policy/configurations/TeamsClientConfiguration"
        teams = _token(sandbox, client, f"{TEAMS_RESOURCE}/.default")
        graph = _token(sandbox, client, "https://graph.microsoft.com/.default")
        assert client.get(url, headers={"Authorization": f"Bearer {graph}"}).status_code == 401
        read = client.get(url, headers={"Authorization": f"Bearer {teams}"})
        assert read.status_code == 200 and read.json()[0]["AllowEmailIntoChannel"] is False
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            written = client.request(
                method, url, headers={"Authorization": f"Bearer {teams}"}, json={"x": 1}
            )
            assert written.status_code == 405, method
        assert len(sandbox.refused) == 4


def test_the_client_cannot_send_anything_but_a_get() -> None:
    async def attempt() -> None:
        origin = "https://api.interfaces.records.teams.microsoft.com"
        _transport, graph, admin = make_clients(Limits(), None, Destinations.of([origin]))
        try:
            with pytest.raises(ReadOnlyViolation):
                await admin.put(f"{origin}/Skype.Policy/configurations/TeamsMeetingPolicy")
        finally:
            await graph.aclose()
            await admin.aclose()

    asyncio.run(attempt())
    assert not hasattr(TeamsApi, "post")  # the client itself has no verb but GET


def test_a_redirected_or_paged_teams_answer_is_not_followed() -> None:
    async def read(handler: Any) -> Fetched:
        tokens: list[str] = []

        async def token(scope: str) -> str:
            tokens.append(scope)
            return "t0ken"

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)
        api = TeamsApi(http, token, base="https://teams.test", scope="x/.default", now=lambda: NOW)
        try:
            return await api.get("Skype.Policy/configurations/TeamsMeetingPolicy")
        finally:
            await http.aclose()

    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/x"})

    def paged(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "https://teams.test/2"})

    def malformed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'[{"Identity": NaN}]')

    moved = asyncio.run(read(redirect))
    assert not moved.ok and "never sent after a redirect" in (moved.error or "")
    assert not asyncio.run(read(paged)).ok
    assert "malformed JSON" in (asyncio.run(read(malformed)).error or "")


# -- clouds and config ------------------------------------------------------------------------


def test_each_cloud_names_its_teams_host_and_the_teams_resource() -> None:
    hosts = {name: endpoints_for(name).teams for name in CLOUDS}
    assert hosts == {
        "global": "https://api.interfaces.records.teams.microsoft.com",
        "gcc": "https://api.interfaces.records.teams.microsoft.com",
        "gcc-high": "https://api.interfaces.records.gov.teams.microsoft.us",
        "dod": "https://api.interfaces.records.gov.teams.microsoft.us",
    }
    assert {c.teams_scope for c in CLOUDS.values()} == {
        "48ac35b8-9aa8-4d74-927d-1f4a14a0b239/.default"
    }
    assert endpoints_for("global", {"teams": "https://proxy.test/"}).teams == "https://proxy.test"


def test_a_teams_endpoint_that_is_not_https_is_a_config_error() -> None:
    config = {"tenant_id": "contoso.onmicrosoft.com", "endpoints": {"teams": "http://x.test"}}
    with pytest.raises(InputError, match=r"teams: http://x\.test is not an https:// URL"):
        M365Connector(config, Path()).preflight(NOW)


def test_permissions_name_what_the_teams_read_needs() -> None:
    names = "\n".join(f"{p.name}: {p.why}" for p in M365Connector.permissions())
    assert "Skype and Teams Tenant Admin API" in names and "Teams settings" in names
    _, steps = M365Connector.grant_guide()
    assert "Teams settings" in steps


# -- the sections, on recorded answers --------------------------------------------------------


def _sections(fetched: dict[str, Fetched]) -> dict[str, Any]:
    return {s.name: s for s in normalise(fetched, M365Settings()) if s.name.startswith("m365.")}


def _with(path: str, body: Any) -> dict[str, Fetched]:
    _info, fetched = read_recorded_tenant(TENANTS / "contoso-health", NOW)
    return {**fetched, path: Fetched(path, 200, body, NOW)}


@pytest.mark.parametrize(
    ("allowed", "facts"),
    [
        # The REST answer (cirosec/AzRanger's model of it).
        (
            {"AllowedDomain": [{"Domain": "a.example"}, {"Domain": "b.example"}]},
            {"domains": ["a.example", "b.example"], "all_known_domains": False},
        ),
        # ScubaGear's sample export (one entry) and its Rego tests (a list of objects).
        ({"AllowedDomain": "Domain=a.example"}, {"domains": ["a.example"]}),
        ([{"AllowedDomain": ["Domain=a.example"]}], {"domains": ["a.example"]}),
        ([], {"domains": [], "all_known_domains": False}),
        ({"AllowAllKnownDomains": {}}, {"domains": [], "all_known_domains": True}),
        (None, {"domains": []}),
    ],
)
def test_allowed_domains_are_read_from_every_published_shape(
    allowed: Any, facts: dict[str, Any]
) -> None:
    body = [{"Identity": "Global", "AllowFederatedUsers": True, "AllowedDomains": allowed}]
    section = _sections(_with(FEDERATION, body))["m365.teams.federation_configuration"]
    assert section.status == "ok"
    got = section.data[0]["allowed_domains"]
    assert got["understood"] is True
    assert {k: got[k] for k in facts} == facts


def test_an_allowed_domain_list_of_unknown_shape_does_not_pass() -> None:
    body = [
        {
            "Identity": "Global",
            "AllowFederatedUsers": True,
            "AllowedDomains": {"AllowedDomain": [{"Domain": "a.example"}], "Partners": "odd"},
            "AllowTeamsConsumer": False,
        }
    ]
    fetched = _with(FEDERATION, body)
    section = _sections(fetched)["m365.teams.federation_configuration"]
    assert section.data[0]["allowed_domains"]["understood"] is False
    info = {"default_domain": "contoso-health.onmicrosoft.com"}
    result = evaluate_fetched(
        info, fetched, M365Settings(), "scuba", ["m365.teams.external-access-allow-list"]
    )["m365.teams.external-access-allow-list"]
    assert result.status == "fail" and "understood is false" in (result.reason or "")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "not even the Global one"),
        ({"policies": []}, "not a list of policies"),
        (["Global"], "not a list of policies"),
    ],
)
def test_an_empty_or_odd_teams_answer_is_an_error_not_a_pass(body: Any, problem: str) -> None:
    fetched = _with(MEETINGS, body)
    section = _sections(fetched)["m365.teams.meeting_policies"]
    assert section.status == "error" and problem in (section.reason or "")
    info = {"default_domain": "contoso-health.onmicrosoft.com"}
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", ["m365.teams.*"])
    meeting = [CONTROLS[f"MS.TEAMS.1.{n}"] for n in ("1v1", "2v2", "3v1", "4v1", "5v1", "6v1")]
    assert {results[c].status for c in meeting} == {"error"}
    assert results["m365.teams.email-into-channel-off"].status == "pass"  # another read


def test_a_teams_answer_that_was_not_collected_is_an_error() -> None:
    _info, fetched = read_recorded_tenant(TENANTS / "contoso-health", NOW)
    fetched = {p: f for p, f in fetched.items() if not p.startswith("teams/")}
    sections = _sections(fetched)
    assert {
        n: s.status for n, s in sections.items() if n.startswith("m365.teams.")
    } == dict.fromkeys(
        [
            "m365.teams.meeting_policies",
            "m365.teams.broadcast_policies",
            "m365.teams.federation_configuration",
            "m365.teams.client_configuration",
            "m365.teams.app_permission_policies",
        ],
        "error",
    )


def test_a_bare_policy_object_or_a_value_list_is_read_as_a_list() -> None:
    policy = {"Identity": "Global", "AllowEmailIntoChannel": False}
    path = "teams/Skype.Policy/configurations/TeamsClientConfiguration"
    for body in (policy, {"value": [policy]}):
        section = _sections(_with(path, body))["m365.teams.client_configuration"]
        assert section.status == "ok" and section.data == [policy]


def test_only_the_global_meeting_policy_decides_the_global_only_policies() -> None:
    body = json.loads((PUBLISHED / f"{MEETINGS}.json").read_text())
    assert [p["Identity"] for p in body] == ["Global", "Tag:Clinic Staff"]
    body[1]["AllowCloudRecording"] = True  # a custom policy may allow recording (SCuBA 1.6)
    body[1]["AutoAdmittedUsers"] = "Everyone"  # and admit whom it likes (1.3, 1.4)
    info = {"default_domain": "contoso-health.onmicrosoft.com"}
    results = evaluate_fetched(info, _with(MEETINGS, body), M365Settings(), "scuba", ["m365.*"])
    for control in (
        "m365.teams.cloud-recording-off",
        "m365.teams.lobby-not-bypassed",
        "m365.teams.auto-admit-internal-only",
    ):
        assert results[control].status == "pass", control
    # Without a Global policy there is nothing that passes them.
    results = evaluate_fetched(
        info, _with(MEETINGS, body[1:]), M365Settings(), "scuba", ["m365.teams.*"]
    )
    assert results["m365.teams.cloud-recording-off"].status == "fail"
