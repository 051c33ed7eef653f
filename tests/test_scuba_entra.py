"""Entra ID privileged access and application credentials (#17): MS.AAD.5.5-5.7 from the
default app management policy, MS.AAD.7.1-7.9 from PIM's assignments and role settings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from m365_sandbox import sandbox_config

from connectors.base import CollectContext
from connectors.m365.connector import M365Connector
from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.graph import lacks_pim_licence
from connectors.m365.normalise import M365Settings, normalise
from connectors.m365.permissions import graph_permission, permissions
from connectors.m365.privileged import duration_days
from connectors.m365.sandbox.server import SECRET_ENV, Sandbox

from conftest import ScubaDemo
from helpers import REPO
from m365_verdicts import NOW, evaluate_fetched

TENANTS = REPO / "fixtures" / "tenants"
CONTROLS = {
    "m365.entra.app-password-addition-blocked": "MS.AAD.5.5v1",
    "m365.entra.app-password-lifetime-limited": "MS.AAD.5.6v1",
    "m365.entra.app-certificate-lifetime-limited": "MS.AAD.5.7v1",
    "m365.entra.global-admin-count": "MS.AAD.7.1v1",
    "m365.entra.fine-grained-admin-roles": "MS.AAD.7.2v1",
    "m365.entra.privileged-users-cloud-only": "MS.AAD.7.3v1",
    "m365.entra.no-permanent-active-admins": "MS.AAD.7.4v1",
    "m365.entra.admin-roles-assigned-in-pim": "MS.AAD.7.5v1",
    "m365.entra.global-admin-activation-approval": "MS.AAD.7.6v1",
    "m365.entra.privileged-assignment-alerts": "MS.AAD.7.7v1",
    "m365.entra.global-admin-activation-alert": "MS.AAD.7.8v1",
    "m365.entra.privileged-activation-alerts": "MS.AAD.7.9v1",
}
PIM = (
    "graph/v1.0/roleManagement/directory/roleEligibilityScheduleInstances",
    "graph/v1.0/roleManagement/directory/roleAssignmentScheduleInstances",
    "graph/v1.0/policies/roleManagementPolicyAssignments",
)


def _demo(scuba_demo: ScubaDemo, tenant: str = "contoso-health") -> dict[str, dict[str, Any]]:
    return {r["control"]: r for r in scuba_demo(tenant)}


def test_the_sample_tenant_passes_and_reports_the_scuba_ids(scuba_demo: ScubaDemo) -> None:
    results = _demo(scuba_demo)
    for control, scuba in CONTROLS.items():
        assert results[control]["status"] == "pass", (control, results[control]["reason"])
        assert results[control]["scuba"] == [scuba]


def test_the_clinic_fails_every_planted_control(scuba_demo: ScubaDemo) -> None:
    results = _demo(scuba_demo, "fabrikam-clinic")
    assert {c: results[c]["status"] for c in CONTROLS} == dict.fromkeys(CONTROLS, "fail")
    # Its one Global Administrator, permanently active and assigned outside PIM.
    assert "/global_administrators has 1 item" in results["m365.entra.global-admin-count"]["reason"]
    assert (
        "/roles/0/assigned_outside_pim"
        in results["m365.entra.admin-roles-assigned-in-pim"]["reason"]
    )


def _fetched(tenant: str) -> tuple[dict[str, Any], dict[str, Fetched]]:
    info, fetched = read_recorded_tenant(TENANTS / tenant, NOW)
    return info, dict(fetched)


def _sections(fetched: dict[str, Fetched], **settings: Any) -> dict[str, Any]:
    return {s.name: s for s in normalise(fetched, M365Settings(**settings))}


def test_a_tenant_without_p2_is_an_error_naming_the_licence() -> None:
    info, fetched = _fetched("contoso-health")
    reason = "answered 400: AadPremiumLicenseRequired: The tenant needs an AAD Premium 2 license."
    for path in PIM:
        fetched[path] = Fetched(path, 400, None, NOW, f"{path} {reason} (P2)", unlicensed=True)
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", controls=list(CONTROLS))
    app = [c for c in CONTROLS if c.startswith("m365.entra.app-")]
    assert {c: r.status for c, r in results.items()} == {
        c: "pass" if c in app else "error" for c in CONTROLS
    }
    assert "AadPremiumLicenseRequired" in (results["m365.entra.global-admin-count"].reason or "")


def test_the_connector_names_the_p2_licence_when_pim_is_absent(tmp_path: Path) -> None:
    """Through the sandbox, which answers PIM's reads as the service does without Entra ID P2."""
    tenant = tmp_path / "tenant"
    shutil.copytree(TENANTS / "contoso-health", tenant)
    for path in PIM:
        (tenant / f"{path}.json").unlink()
    with Sandbox(tenant) as sandbox:
        config = sandbox_config(sandbox, limits={"retries": 0, "timeout_seconds": 10})
        connector = M365Connector(config, Path())
        connector.environ = {SECRET_ENV: sandbox.client_secret}
        ctx = CollectContext(
            connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
        )
        asyncio.run(connector.collect(ctx))
    sections = {s.name: s for s in ctx.sections}
    for name in ("m365.entra.privileged_roles", "m365.entra.role_management_policies"):
        assert sections[name].status == "error"
        reason = sections[name].reason or ""
        assert "AadPremiumLicenseRequired" in reason, reason
        assert "(the tenant lacks the licence for it (Microsoft Entra ID P2 or" in reason, reason
    assert sections["m365.entra.app_management_policy"].status == "ok"
    assert sections["m365.entra.role_coverage"].status == "ok"  # the hipaa reads are untouched


@pytest.mark.parametrize(
    ("text", "p2"),
    [
        ("AadPremiumLicenseRequired: The tenant needs an AAD Premium 2 license.", True),
        (
            "BadRequest: The tenant needs to have Microsoft Entra ID P2 or Microsoft Entra ID "
            "Governance license.",
            True,
        ),
        ("AadPremiumLicenseRequired: PIM requires Entra ID P2 or Governance.", True),
        ("BadRequest: Invalid filter clause", False),
    ],
)
def test_pims_licence_refusal_is_known_by_its_code_or_either_message(text: str, p2: bool) -> None:
    """Public clients quote the refusal with either message, and the newer one also under the
    code BadRequest: a refusal in any of those words names the licence."""
    assert lacks_pim_licence(text) is p2


def test_a_forbidden_app_management_policy_is_an_error() -> None:
    info, fetched = _fetched("contoso-health")
    path = "graph/v1.0/policies/defaultAppManagementPolicy"
    fetched[path] = Fetched(path, 403, None, NOW, "answered 403 (grant Policy.Read.All)")
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", controls=list(CONTROLS))
    assert {c: results[c].status for c in CONTROLS if c.startswith("m365.entra.app-")} == {
        c: "error" for c in CONTROLS if c.startswith("m365.entra.app-")
    }
    assert graph_permission(path) == "Policy.Read.All"


def test_pim_reads_need_no_new_permission() -> None:
    granted = {p.name.rsplit(" ", 1)[-1] for p in permissions()}
    assert {graph_permission(p) for p in PIM} == {"RoleManagement.Read.Directory"}
    assert "RoleManagement.Read.Directory" in granted


def test_a_role_held_by_a_group_is_not_counted_as_known() -> None:
    """A group's members (and PIM for Groups' eligible members) are not read: the controls that
    count users fail rather than pass on a partial count."""
    info, fetched = _fetched("contoso-health")
    path = PIM[0]
    body = json.loads(json.dumps(fetched[path].data))
    body["value"].append(
        {
            "id": "grp-1",
            "principalId": "0c6a3f5e-1111-4e2b-9d1a-2b3c4d5e6f70",
            "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10",
            "directoryScopeId": "/",
            "startDateTime": "2026-01-05T09:00:00Z",
            "endDateTime": None,
            "memberType": "Direct",
            "principal": {
                "@odata.type": "#microsoft.graph.group",
                "id": "0c6a3f5e-1111-4e2b-9d1a-2b3c4d5e6f70",
                "displayName": "Tier 0 admins",
            },
        }
    )
    fetched[path] = Fetched(path, 200, body, NOW)
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", controls=list(CONTROLS))
    for control in (
        "m365.entra.global-admin-count",
        "m365.entra.privileged-users-cloud-only",
        "m365.entra.global-admin-activation-approval",
    ):
        assert results[control].status == "fail", control
    roles = _sections(fetched)["m365.entra.privileged_roles"].data
    assert roles["non_user_principals"][0]["name"] == "Tier 0 admins"


def test_break_glass_accounts_may_be_permanently_active() -> None:
    info, fetched = _fetched("contoso-health")
    path = PIM[1]
    body = json.loads(json.dumps(fetched[path].data))
    glass = next(
        i for i in body["value"] if i["principal"]["userPrincipalName"].startswith("break")
    )
    glass["endDateTime"] = None
    fetched[path] = Fetched(path, 200, body, NOW)
    control = ["m365.entra.no-permanent-active-admins"]
    plain = evaluate_fetched(info, fetched, M365Settings(), "scuba", controls=control)
    glass_settings = M365Settings(break_glass=("breakglass01@contoso-health.onmicrosoft.com",))
    exempt = evaluate_fetched(info, fetched, glass_settings, "scuba", controls=control)
    assert (plain[control[0]].status, exempt[control[0]].status) == ("fail", "pass")


def test_an_unknown_privileged_role_name_is_an_error() -> None:
    _info, fetched = _fetched("contoso-health")
    section = _sections(fetched, privileged_roles=("Global Administrator", "Global Admin"))[
        "m365.entra.privileged_roles"
    ]
    assert section.status == "error"
    assert "no role named Global Admin" in (section.reason or "")


def test_a_synchronised_account_that_could_not_be_read_is_not_cloud_only() -> None:
    _info, fetched = _fetched("contoso-health")
    users = [p for p in fetched if p.startswith("graph/v1.0/users/")]
    del fetched[users[0]]
    rows = _sections(fetched)["m365.entra.privileged_roles"].data["users"]
    missing = next(r for r in rows if f"graph/v1.0/users/{r['id']}" == users[0])
    assert (missing["account_read"], missing["cloud_only"]) == (False, False)


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("P180D", 180.0),
        ("P4DT12H", 4.5),
        ("PT8H", round(8 / 24, 4)),
        ("P1Y", None),
        ("P", None),
        ("P1DT", None),
        (None, None),
        ("180", None),
    ],
)
def test_lifetimes_are_read_as_days_or_not_at_all(value: Any, days: float | None) -> None:
    assert duration_days(value) == days


def test_an_app_specific_policy_that_allows_passwords_is_an_exemption() -> None:
    info, fetched = _fetched("contoso-health")
    path = "graph/v1.0/policies/appManagementPolicies"
    fetched[path] = Fetched(
        path,
        200,
        {
            "value": [
                {
                    "id": "db9d4b58-3488-4da4-9994-49773c454e33",
                    "displayName": "Legacy integration apps",
                    "isEnabled": True,
                    "restrictions": {
                        "passwordCredentials": [
                            {
                                "restrictionType": "passwordAddition",
                                "state": "disabled",
                                "maxLifetime": None,
                                "restrictForAppsCreatedAfterDateTime": "0001-01-01T00:00:00Z",
                            }
                        ],
                        "keyCredentials": [],
                    },
                }
            ]
        },
        NOW,
    )
    controls = [c for c in CONTROLS if c.startswith("m365.entra.app-")]
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", controls=controls)
    assert {c: r.status for c, r in results.items()} == dict.fromkeys(controls, "fail")


def test_a_pseudonymised_recording_keeps_the_privileged_users_accounts(tmp_path: Path) -> None:
    """The accounts are recorded under their object ids (users/{id}.json): pseudonymising renames
    them with the ids' pseudonyms, so a shared recording judges the same."""
    from connectors.m365.pseudonymise import pseudonymise_tenant

    tenant = tmp_path / "fabrikam"
    shutil.copytree(TENANTS / "fabrikam-clinic", tenant)
    pseudonymise_tenant(tenant)
    _info, original = _fetched("fabrikam-clinic")
    _info, replayed = read_recorded_tenant(tenant, NOW)
    before = _sections(original)["m365.entra.privileged_roles"].data
    after = _sections(dict(replayed))["m365.entra.privileged_roles"].data
    shape = [(u["roles"], u["account_read"], u["cloud_only"]) for u in before["users"]]
    assert [(u["roles"], u["account_read"], u["cloud_only"]) for u in after["users"]] == shape
    assert all(u["account_read"] for u in after["users"])
    assert "owner@fabrikamclinic.com" not in json.dumps(after)


def test_only_guid_principal_ids_become_request_paths() -> None:
    """Principal ids come from the tenant's answers: one that is not a GUID (a path, a query)
    is never put into a look-up's URL."""
    from connectors.m365.connector import _privileged

    _info, fetched = _fetched("contoso-health")
    eligible = json.loads(json.dumps(fetched[PIM[0]].data))
    odd = json.loads(json.dumps(eligible["value"][0]))
    odd["principalId"] = odd["principal"]["id"] = "../groups/x?$expand=members"
    eligible["value"].append(odd)
    answers = {
        PIM[0]: Fetched(PIM[0], 200, eligible, NOW),
        PIM[1]: fetched[PIM[1]],
        PIM[2]: fetched[PIM[2]],
    }
    asked: list[str] = []

    class Graph:
        async def collection(self, path: str, query: str = "") -> Fetched:
            return answers[f"graph/v1.0/{path}"]

        async def batch(self, paths: Any) -> dict[str, Fetched]:
            asked.extend(paths)
            return {}

    async def definitions() -> list[Fetched]:
        return [fetched["graph/v1.0/roleManagement/directory/roleDefinitions"]]

    asyncio.run(_privileged(Graph(), definitions(), M365Settings()))  # type: ignore[arg-type]
    assert asked and all(p.startswith("users/") for p in asked)
    assert not [p for p in asked if ".." in p or "groups" in p]
