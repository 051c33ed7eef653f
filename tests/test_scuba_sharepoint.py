"""SCuBA's SharePoint and OneDrive sharing policies (MS.SHAREPOINT.1.2, 2.1, 2.2, 3.1, 3.2, 3.3):
the opt-in read of the SharePoint admin API (GET /_api/SPO.Tenant), its section, and its six
scuba-only controls, against the sandbox over HTTPS as a live run would go."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import ssl
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.engine import EvaluationContext, evaluate
from auditor.model.snapshot import Snapshot
from auditor.policy import load_policies
from auditor.resources import policies_dir
from connectors.base import CollectContext
from connectors.m365.clouds import CLOUDS
from connectors.m365.connector import M365Connector
from connectors.m365.http import Destinations, GuardedTransport, Limits, read_only_problem
from connectors.m365.permissions import permissions
from connectors.m365.sandbox.server import SECRET_ENV, Faults, Sandbox

from helpers import REPO, run_cli

BASE = REPO / "tests" / "data" / "m365-published" / "base"
CONTROLS = {
    "m365.onedrive.external-sharing-limited": "MS.SHAREPOINT.1.2v1",
    "m365.sharepoint.default-link-specific-people": "MS.SHAREPOINT.2.1v1",
    "m365.sharepoint.default-link-view": "MS.SHAREPOINT.2.2v1",
    "m365.sharepoint.anyone-links-expire": "MS.SHAREPOINT.3.1v1",
    "m365.sharepoint.anyone-links-view-only": "MS.SHAREPOINT.3.2v1",
    "m365.sharepoint.verification-code-reauth": "MS.SHAREPOINT.3.3v2",
}
SECTION = "m365.sharepoint.tenant"


def _collect(
    sandbox: Sandbox, *, auth: str = "certificate", **extra: Any
) -> tuple[CollectContext, M365Connector]:
    config: dict[str, Any] = {
        "tenant_id": sandbox.tenant.tenant_id,
        "client_id": sandbox.client_id,
        "auth": auth,
        "endpoints": sandbox.endpoints(),
        "limits": {"retries": 1, "backoff_seconds": 0.05, "timeout_seconds": 10},
    }
    if auth == "certificate":
        config["certificate_file"] = str(sandbox.files["client"])
    else:
        config["client_secret_env"] = SECRET_ENV
    config.update(extra)
    connector = M365Connector(config, Path())
    connector.environ = {SECRET_ENV: sandbox.client_secret}
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
    )
    asyncio.run(connector.collect(ctx))
    return ctx, connector


def _section(ctx: CollectContext) -> Any:
    return next(s for s in ctx.sections if s.name == SECTION)


def _verdicts(ctx: CollectContext) -> dict[str, tuple[str, str]]:
    now = dt.datetime.now(dt.UTC)
    snapshot = Snapshot(collected_at=now)
    for platform, kind, subject in ctx.subjects:
        snapshot.add_subject(platform, kind, subject)
    snapshot.sections.extend(ctx.sections)
    policies = load_policies([policies_dir()]).select("scuba", list(CONTROLS))
    results = evaluate(policies, snapshot, EvaluationContext("scuba", now)).results
    return {r.control: (r.status, r.reason or "") for r in results}


def _sharepoint_requests(sandbox: Sandbox) -> list[tuple[str, str, int]]:
    return [(e.method, e.path, e.status) for e in sandbox.log if e.role == "sharepoint"]


def test_the_controls_are_scuba_only() -> None:
    policies = {p.id: p for p in load_policies([policies_dir()])}
    for control, scuba in CONTROLS.items():
        policy = json.loads((policies_dir() / f"{control}.json").read_text())
        assert (policy["profiles"], policy["scuba"], policy["source"]) == (
            ["scuba"],
            [scuba],
            SECTION,
        )
        assert control in policies


def test_the_demo_tenants_verdicts(tmp_path: Path) -> None:
    verdicts = {}
    for demo in ("contoso-health", "fabrikam-clinic"):
        done = run_cli(
            "audit", "--demo", demo, "--profile", "scuba", "--out", tmp_path / demo,
            "--format", "json", cwd=tmp_path,
        )  # fmt: skip
        verdicts[demo] = {
            r["control"]: (r["status"], r["scuba"])
            for r in json.loads(done.stdout)["results"]
            if r["control"] in CONTROLS
        }
    assert verdicts["contoso-health"] == {c: ("pass", [i]) for c, i in CONTROLS.items()}
    # The clinic allows 'Anyone' links, editable and never expiring, by default, in OneDrive
    # too, and asks verification-code guests for no new code.
    assert verdicts["fabrikam-clinic"] == {c: ("fail", [i]) for c, i in CONTROLS.items()}
    # The answer is kept in the bundle, in the recorded-tenant layout.
    bundle = next((tmp_path / "fabrikam-clinic").glob("*.zip"))
    with zipfile.ZipFile(bundle) as archive:
        kept = json.loads(archive.read("raw/m365/sharepoint/SPO.Tenant.json"))
    assert kept["d"]["ODBSharingCapability"] == 2


def test_the_published_answer_is_read_with_a_get_and_a_sharepoint_token() -> None:
    with Sandbox(BASE) as served:
        ctx, connector = _collect(served, read_sharepoint_admin=True)
        requests = _sharepoint_requests(served)
    assert requests == [("GET", "/_api/SPO.Tenant", 200)]
    section = _section(ctx)
    assert section.status == "ok", section.reason
    assert section.data == {
        "SharingCapability": 3,
        "ODBSharingCapability": 3,
        "DefaultSharingLinkType": 1,
        "DefaultLinkPermission": 1,
        "RequireAnonymousLinksExpireInDays": 14,
        "FileAnonymousLinkType": 1,
        "FolderAnonymousLinkType": 1,
        "EmailAttestationRequired": True,
        "EmailAttestationReAuthDays": 15,
    }
    assert section.source == "sharepoint:GET /_api/SPO.Tenant"
    assert connector.scope()["read_sharepoint_admin"] is True
    assert {c: v[0] for c, v in _verdicts(ctx).items()} == dict.fromkeys(CONTROLS, "pass")


def test_not_configured_is_an_error_that_says_what_to_grant() -> None:
    with Sandbox(BASE) as served:
        ctx, _ = _collect(served)
        requests = _sharepoint_requests(served)
    assert requests == []  # no token asked for, no request sent
    section = _section(ctx)
    assert section.status == "error"
    assert "Sites.FullControl.All" in (section.reason or "")
    assert "read_sharepoint_admin = true" in (section.reason or "")
    verdicts = _verdicts(ctx)
    assert {c: v[0] for c, v in verdicts.items()} == dict.fromkeys(CONTROLS, "error")
    assert all("Sites.FullControl.All" in reason for _status, reason in verdicts.values())
    # A read left out by choice is no failed read: m365/_errors.json is for those alone.
    assert "m365/_errors.json" not in {record.path for record in ctx.raw}


@pytest.mark.parametrize("how", ["forbidden", "absent"])
def test_a_refused_read_is_an_error_naming_the_permission(how: str, tmp_path: Path) -> None:
    tenant = BASE
    faults = Faults()
    if how == "forbidden":
        faults = Faults(forbid=("sharepoint/*",))
    else:
        tenant = tmp_path / "tenant"
        shutil.copytree(BASE, tenant)
        shutil.rmtree(tenant / "sharepoint")
    with Sandbox(tenant, faults=faults) as served:
        ctx, _ = _collect(served, read_sharepoint_admin=True)
        requests = _sharepoint_requests(served)
    assert requests == [("GET", "/_api/SPO.Tenant", 403)]
    section = _section(ctx)
    assert section.status == "error"
    reason = section.reason or ""
    assert "403" in reason and "System.UnauthorizedAccessException" in reason
    assert "Sites.FullControl.All" in reason
    verdicts = _verdicts(ctx)
    assert {c: v[0] for c, v in verdicts.items()} == dict.fromkeys(CONTROLS, "error")
    # Every other section of the run is unaffected.
    assert all(s.status == "ok" for s in ctx.sections if s.name != SECTION)


def test_a_malformed_or_failing_answer_is_an_error() -> None:
    with Sandbox(BASE, faults=Faults(malformed=("sharepoint/*",))) as served:
        ctx, _ = _collect(served, read_sharepoint_admin=True)
    assert _section(ctx).status == "error"
    assert "malformed JSON" in (_section(ctx).reason or "")
    with Sandbox(BASE, faults=Faults(fail=("sharepoint/*",))) as served:
        ctx, _ = _collect(served, read_sharepoint_admin=True)
        requests = _sharepoint_requests(served)
    assert requests == [("GET", "/_api/SPO.Tenant", 503)] * 2  # retried once, as configured
    assert _section(ctx).status == "error"


def test_a_client_secret_is_not_sent_to_sharepoint_which_refuses_it() -> None:
    with Sandbox(BASE) as served:
        ctx, _ = _collect(served, auth="client-secret", read_sharepoint_admin=True)
        assert _sharepoint_requests(served) == []
        section = _section(ctx)
        assert section.status == "error"
        assert "client secret" in (section.reason or "")
        assert "certificate" in (section.reason or "")
        # What the connector avoids: SharePoint refuses an app-only token got with a secret.
        token = _token(served, "https://northwindclinic-admin.sharepoint.com/.default")
        answer = _get(served, "/_api/SPO.Tenant", token)
    assert answer.status_code == 401
    assert answer.json() == {"error_description": "Unsupported app only token."}


def test_only_the_tenants_own_admin_site_is_a_token_resource() -> None:
    with Sandbox(BASE) as served:
        response = httpx.post(
            f"{served.origin('login')}/{served.tenant.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": served.client_id,
                "client_secret": served.client_secret,
                "scope": "https://someoneelse-admin.sharepoint.com/.default",
            },
            verify=_trust(served),
        )
    assert response.status_code == 400
    assert "AADSTS500011" in response.json()["error_description"]


def _trust(sandbox: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.files["ca"]))


def _token(sandbox: Sandbox, scope: str) -> str:
    response = httpx.post(
        f"{sandbox.origin('login')}/{sandbox.tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": scope,
        },
        verify=_trust(sandbox),
    )
    response.raise_for_status()
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def _get(sandbox: Sandbox, path: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{sandbox.origin('sharepoint')}{path}",
        headers={"Authorization": f"Bearer {token}"},
        verify=_trust(sandbox),
    )


# A CSOM query that changes a setting: what the read must never send (a ProcessQuery body with
# a SetProperty action on the Tenant object, as SharePoint's client object model writes it).
WRITE_QUERY = (
    '<Request xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009" '
    'SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="test">'
    '<Actions><SetProperty Id="2" ObjectPathId="1" Name="SharingCapability">'
    '<Parameter Type="Enum">2</Parameter></SetProperty></Actions>'
    '<ObjectPaths><Constructor Id="1" TypeId="{268004ae-ef6b-4e9b-8425-127220d84719}" />'
    "</ObjectPaths></Request>"
)


def test_a_write_is_refused_by_the_sandbox_and_never_built_by_the_client() -> None:
    with Sandbox(BASE) as served:
        refused = [
            httpx.request(
                method,
                f"{served.origin('sharepoint')}{path}",
                content=WRITE_QUERY.encode(),
                headers={"Content-Type": "text/xml"},
                verify=_trust(served),
            ).status_code
            for method, path in (
                ("POST", "/_vti_bin/client.svc/ProcessQuery"),
                ("PATCH", "/_api/SPO.Tenant"),
                ("POST", "/_api/SPO.Tenant"),
            )
        ]
        assert refused == [405, 405, 405]
        assert [e.method for e in served.refused] == ["POST", "PATCH", "POST"]
        assert all(e.role == "sharepoint" for e in served.refused)
        # The connector's whole read of the admin site is one GET with no body.
        served.log.clear()
        _collect(served, read_sharepoint_admin=True)
        assert _sharepoint_requests(served) == [("GET", "/_api/SPO.Tenant", 200)]
    # And the HTTP layer under every request would refuse a ProcessQuery POST before sending it.
    request = httpx.Request(
        "POST",
        "https://northwindclinic-admin.sharepoint.com/_vti_bin/client.svc/ProcessQuery",
        content=WRITE_QUERY.encode(),
    )
    assert (
        read_only_problem(request)
        == "POST /_vti_bin/client.svc/ProcessQuery with a body that is not JSON"
    )


def test_the_token_goes_only_to_the_admin_site_once_it_is_known() -> None:
    transport = GuardedTransport(
        lambda: httpx.AsyncHTTPTransport(),
        Limits(),
        destinations=Destinations.of(["https://graph.microsoft.com"]),
    )
    admin = httpx.URL("https://northwindclinic-admin.sharepoint.com/_api/SPO.Tenant")
    other = httpx.URL("https://contoso-admin.sharepoint.com/_api/SPO.Tenant")
    assert transport.destinations.problem(admin) is not None
    transport.allow("https://northwindclinic-admin.sharepoint.com")
    assert transport.destinations.problem(admin) is None
    assert transport.destinations.problem(other) is not None  # another tenant's site: no
    with pytest.raises(ValueError, match="https"):
        transport.allow("http://northwindclinic-admin.sharepoint.com")


@pytest.mark.parametrize(
    ("cloud", "admin"),
    [
        ("global", "https://northwind-admin.sharepoint.com"),
        ("gcc", "https://northwind-admin.sharepoint.com"),
        ("gcc-high", "https://northwind-admin.sharepoint.us"),
        ("dod", "https://northwind-admin.sharepoint-mil.us"),
    ],
)
def test_the_admin_site_of_each_cloud(cloud: str, admin: str) -> None:
    found = CLOUDS[cloud]
    assert found.sharepoint_admin("Northwind.onmicrosoft.com") == admin
    assert found.is_sharepoint_admin(admin)
    assert not found.is_sharepoint_admin("https://127.0.0.1:8443")
    # Only an initial domain names the admin site; a vanity domain does not.
    assert found.sharepoint_admin("northwind.org") is None
    assert found.sharepoint_admin("north_wind.onmicrosoft.com") is None


def test_permissions_name_the_opt_in_and_why(tmp_path: Path) -> None:
    listed = {p.name: p.why for p in permissions()}
    why = listed["Office 365 SharePoint Online application permission Sites.FullControl.All"]
    assert "OPT-IN" in why and "read_sharepoint_admin = true" in why and "certificate" in why
    proc = run_cli("permissions", cwd=tmp_path)
    assert "Sites.FullControl.All" in proc.stdout
    steps = proc.stdout.split("Grant them without PowerShell", 1)[1]
    # The grant step is printed commented out: it is not run unless someone chooses to.
    granting = [line for line in steps.splitlines() if '--api "$SPO"' in line]
    assert granting and all(line.lstrip().startswith("#") for line in granting)


def test_record_writes_the_answer_in_the_recorded_tenant_layout(tmp_path: Path) -> None:
    with Sandbox(BASE) as served:
        config = tmp_path / "commsaudit.toml"
        config.write_text(
            served.config_toml("certificate")
            + "read_sharepoint_admin = true\n"
            + '[policies]\nprofile = "scuba"\ncontrols = '
            + json.dumps(sorted(CONTROLS))
            + "\n"
        )
        done = run_cli(
            "record", "--config", config, "--tenants", tmp_path / "recorded", "--format", "json",
            cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = tmp_path / "recorded" / "northwindclinic.onmicrosoft.com"
    written = json.loads((recorded / "sharepoint" / "SPO.Tenant.json").read_text())
    published = json.loads((BASE / "sharepoint" / "SPO.Tenant.json").read_text())
    assert written == published
    # The recording serves back with the same verdicts.
    statuses = {r["control"]: r["status"] for r in json.loads(done.stdout)["results"]}
    assert {c: statuses[c] for c in CONTROLS} == dict.fromkeys(CONTROLS, "pass")
