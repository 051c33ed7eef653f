"""CISA SCuBA beside HIPAA: the baseline catalogue (auditor/reference/scuba-baselines.json), the
SCuBA ids controls carry, the `scuba` profile, and docs/scuba.md's coverage table."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from pathlib import Path

from scuba_coverage import page

from auditor.policy import load_policies, scuba_baselines
from auditor.resources import policies_dir
from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.normalise import M365Settings

from conftest import ScubaDemo
from helpers import REPO, members, run_cli
from m365_verdicts import NOW, evaluate_fetched


def test_the_catalogue_holds_the_92_policies_of_the_five_baselines() -> None:
    baselines = scuba_baselines()
    assert Counter(p["baseline"] for p in baselines.values()) == {
        "aad": 34,
        "exo": 12,
        "securitysuite": 24,
        "sharepoint": 8,
        "teams": 14,
    }
    assert all(p["level"] in ("SHALL", "SHOULD") for p in baselines.values())
    assert baselines["MS.AAD.1.1v1"]["statement"] == "Legacy authentication SHALL be blocked."


def test_controls_with_scuba_ids_are_the_scuba_profile() -> None:
    policies = load_policies([policies_dir()])
    tagged = {p.id for p in policies if p.scuba}
    in_profile = {p.id for p in policies if "scuba" in p.profiles}
    assert tagged == in_profile
    assert len(tagged) >= 16
    assert all(i in scuba_baselines() for p in policies for i in p.scuba)


def test_the_coverage_page_is_generated_from_the_policies() -> None:
    """Regenerate with: python tests/scuba_coverage.py > docs/scuba.md"""
    assert (REPO / "docs" / "scuba.md").read_text() == page()


def test_lint_rejects_a_scuba_id_that_is_no_baseline_policy(tmp_path: Path) -> None:
    policy = json.loads((REPO / "policies" / "m365.auth.legacy-blocked.json").read_text())
    policy["id"] = "custom.made-up-scuba"
    policy["scuba"] = ["MS.AAD.99.1v1"]
    (tmp_path / "custom.made-up-scuba.json").write_text(json.dumps(policy))
    done = run_cli("policies", "lint", tmp_path, cwd=tmp_path)
    assert done.returncode == 2
    assert "/scuba: MS.AAD.99.1v1 is no current SCuBA baseline policy" in done.stdout + done.stderr


def test_the_scuba_profile_reports_scuba_ids_beside_hipaa_citations(tmp_path: Path) -> None:
    done = run_cli(
        "audit", "--demo", "--profile", "scuba", "--out", tmp_path, "--format", "json", cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr  # the demo's news domain has DMARC p=none
    results = json.loads(done.stdout)["results"]
    assert results and all(r["scuba"] and r["citations"] for r in results)
    legacy = next(r for r in results if r["control"] == "m365.auth.legacy-blocked")
    assert (legacy["scuba"], legacy["citations"]) == (["MS.AAD.1.1v1"], ["164.312(d)"])
    consent = next(r for r in results if r["control"] == "m365.entra.admin-consent-workflow")
    assert consent["status"] == "pass"  # read from GET /policies/adminConsentRequestPolicy
    (bundle,) = tmp_path.glob("*.zip")
    files = members(bundle)
    html = files["report.html"].decode()
    # All results grouped by SCuBA baseline, in the baselines' order.
    section = html[html.index('<section id="results">') :]
    headings = re.findall(r"<h3>([^<]+)</h3>", section)
    assert headings[:3] == [
        "Microsoft Entra ID",
        "Exchange Online",
        "Security suite (Defender, EOP, Purview)",
    ]
    assert "164.312(d); SCuBA MS.AAD.1.1v1" in html
    assert "164.312(d); SCuBA MS.AAD.1.1v1" in files["report.md"].decode()


def test_the_clinic_with_planted_failures_fails_its_scuba_controls(tmp_path: Path) -> None:
    done = run_cli(
        "audit",
        "--demo",
        "fabrikam-clinic",
        "--profile",
        "scuba",
        "--out",
        tmp_path,
        "--format",
        "json",
        cwd=tmp_path,
    )
    statuses = {r["control"]: r["status"] for r in json.loads(done.stdout)["results"]}
    assert statuses["m365.entra.guest-access-restricted"] == "fail"  # same access as members
    assert statuses["m365.entra.app-registration-admins-only"] == "fail"
    assert statuses["m365.entra.weak-methods-disabled"] == "pass"
    assert statuses["m365.entra.admin-consent-workflow"] == "fail"  # the workflow is off


# A Conditional Access policy as Graph v1.0 returns it (the conditionalAccessPolicy resource
# type's published example, ids and names invented), to which each case adds its condition.
_CA_POLICY = {
    "id": "9a1c2b3d-0000-4000-8000-0000000000c1",
    "displayName": "Block risk",
    "state": "enabled",
    "conditions": {
        "userRiskLevels": [],
        "signInRiskLevels": [],
        "clientAppTypes": ["all"],
        "authenticationFlows": None,
        "applications": {"includeApplications": ["All"], "excludeApplications": []},
        "users": {"includeUsers": ["All"], "excludeUsers": [], "excludeGroups": []},
    },
    "grantControls": {"operator": "OR", "builtInControls": ["block"]},
}
_CASES = {
    "m365.entra.high-risk-users-blocked": ("userRiskLevels", ["high"]),
    "m365.entra.high-risk-sign-ins-blocked": ("signInRiskLevels", ["high"]),
    "m365.entra.device-code-flow-blocked": (
        "authenticationFlows",
        {"transferMethods": "deviceCodeFlow"},
    ),
}


def _verdicts(conditions: dict[str, object]) -> dict[str, str]:
    info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / "contoso-health", NOW)
    path = "graph/v1.0/identity/conditionalAccess/policies"
    existing = fetched[path].data["value"]
    policy = copy.deepcopy(_CA_POLICY)
    policy["conditions"].update(conditions)
    answers = dict(fetched)
    answers[path] = Fetched(path, 200, {"value": [*existing, policy]}, NOW)
    # Graph beta lists the same policy (the connector reads the conditions v1.0 leaves out there).
    beta = path.replace("v1.0", "beta")
    answers[beta] = Fetched(beta, 200, {"value": [*fetched[beta].data["value"], policy]}, NOW)
    results = evaluate_fetched(info, answers, M365Settings(), "scuba", controls=list(_CASES))
    return {c: r.status for c, r in results.items()}


def test_risk_and_device_code_blocks_are_recognised() -> None:
    assert set(_verdicts({}).values()) == {"fail"}  # the sample tenant blocks none of them
    for control, (key, value) in _CASES.items():
        verdicts = _verdicts({key: value})
        assert verdicts[control] == "pass", (control, verdicts)
        # The same block narrowed by one more condition covers only some sign-ins.
        narrower = _verdicts({key: value, "platforms": {"includePlatforms": ["android"]}})
        assert narrower[control] == "fail", control


def test_sharing_policies_are_read_and_judged(tmp_path: Path) -> None:
    """Get-SharingPolicy through the Exchange admin API: the sample tenant shares with one named
    partner only; the clinic with planted failures shares calendars and contacts with '*'."""
    verdicts = {}
    for organisation in ("contoso-health", "fabrikam-clinic"):
        out = tmp_path / organisation
        out.mkdir()
        done = run_cli(
            "audit",
            "--demo",
            organisation,
            "--profile",
            "scuba",
            "--out",
            out,
            "--format",
            "json",
            cwd=out,
        )
        results = json.loads(done.stdout)["results"]
        verdicts[organisation] = {
            r["control"]: r["status"] for r in results if r["control"].startswith("m365.exo.c")
        }
    assert verdicts["contoso-health"] == {
        "m365.exo.calendar-not-shared-with-all": "pass",
        "m365.exo.contacts-not-shared-with-all": "pass",
    }
    assert verdicts["fabrikam-clinic"] == {
        "m365.exo.calendar-not-shared-with-all": "fail",
        "m365.exo.contacts-not-shared-with-all": "fail",
    }


def test_connection_filter_is_read_and_judged(tmp_path: Path) -> None:
    done = run_cli(
        "audit", "--demo", "fabrikam-clinic", "--profile", "scuba", "--out", tmp_path,
        "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    statuses = {r["control"]: r["status"] for r in json.loads(done.stdout)["results"]}
    assert statuses["m365.exo.no-ip-allow-list"] == "fail"  # 203.0.113.0/24 skips filtering
    assert statuses["m365.exo.safe-list-off"] == "fail"


def test_dmarc_policies_of_the_exchange_baseline(scuba_demo: ScubaDemo) -> None:
    results = {
        (r["control"], r["subject"]): r
        for r in scuba_demo("contoso-health")
        if r["control"].startswith("dns.dmarc.")
    }
    statuses = {key: r["status"] for key, r in results.items()}
    assert statuses[("dns.dmarc.reject", "contoso-health.org")] == "pass"
    assert statuses[("dns.dmarc.reject", "contoso-health-news.org")] == "fail"  # p=none
    # The newsletter domain names no failure-report address; the main domain names its own.
    assert statuses[("dns.dmarc.report-contacts", "contoso-health.org")] == "pass"
    assert statuses[("dns.dmarc.report-contacts", "contoso-health-news.org")] == "fail"
    # CISA's reporting address is for federal agencies: not applicable, and it says why.
    cisa = results[("dns.dmarc.cisa-reports", "contoso-health.org")]
    assert cisa["status"] == "not_applicable"
    assert "federal_reporting" in cisa["reason"]


def test_manual_policies_read_dated_checks_from_the_attestations_file(
    scuba_demo: ScubaDemo,
) -> None:
    manual = {
        "org.manual.risk-notifications": "MS.AAD.2.2v1",
        "org.manual.security-logs-to-soc": "MS.AAD.4.1v1",
        "org.manual.guest-invite-domains": "MS.AAD.8.3v1",
        "org.manual.dlp-restricted-apps": "MS.SECURITYSUITE.3.5v1",
        "org.manual.alerts-monitored": "MS.SECURITYSUITE.4.2v1",
    }
    verdicts = {
        demo: {
            r["control"]: (r["status"], r["scuba"], r["reason"])
            for r in scuba_demo(demo)
            if r["control"] in manual
        }
        for demo in ("contoso-health", "fabrikam-clinic")
    }
    assert {c: v[:2] for c, v in verdicts["contoso-health"].items()} == {
        c: ("pass", [i]) for c, i in manual.items()
    }
    clinic = verdicts["fabrikam-clinic"]
    assert {c: v[0] for c, v in clinic.items()} == dict.fromkeys(manual, "fail")
    assert "age_days is 500" in clinic["org.manual.security-logs-to-soc"][2]  # too old
    assert "met is false" in clinic["org.manual.alerts-monitored"][2]  # checked, not met
    assert 'lacks required property "MS.AAD.2.2v1"' in clinic["org.manual.risk-notifications"][2]


def test_managed_devices_and_authenticator_context(scuba_demo: ScubaDemo) -> None:
    controls = (
        "m365.entra.managed-devices-required",
        "m365.entra.mfa-registration-managed-devices",
        "m365.entra.authenticator-shows-context",
    )
    verdicts = {
        demo: {
            r["control"]: (r["status"], r["reason"])
            for r in scuba_demo(demo)
            if r["control"] in controls
        }
        for demo in ("contoso-health", "fabrikam-clinic")
    }
    assert {c: v[0] for c, v in verdicts["contoso-health"].items()} == dict.fromkeys(
        controls, "pass"
    )
    clinic = verdicts["fabrikam-clinic"]
    assert {c: v[0] for c, v in clinic.items()} == dict.fromkeys(controls, "fail")
    # The clinic leaves what Authenticator shows to Microsoft's default: not explicitly enabled.
    assert "displayAppInformationRequiredState/state" in clinic[controls[2]][1]


def test_risky_agents_are_judged_from_graph_beta(scuba_demo: ScubaDemo) -> None:
    verdicts = {
        demo: next(r for r in scuba_demo(demo) if r["control"] == "m365.entra.risky-agents-blocked")
        for demo in ("contoso-health", "fabrikam-clinic")
    }
    assert verdicts["contoso-health"]["status"] == "pass"
    assert verdicts["contoso-health"]["scuba"] == ["MS.AAD.9.1v1"]
    assert verdicts["fabrikam-clinic"]["status"] == "fail"  # no policy for agents at all


def test_an_unreadable_beta_answer_makes_the_agent_control_an_error() -> None:
    info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / "contoso-health", NOW)
    path = "graph/beta/identity/conditionalAccess/policies"
    fetched[path] = Fetched(path, 403, None, NOW, "403: Authorization_RequestDenied")
    results = evaluate_fetched(
        info, fetched, M365Settings(), "scuba", controls=["m365.entra.risky-agents-blocked"]
    )
    result = results["m365.entra.risky-agents-blocked"]
    assert result.status == "error"  # never a pass on what could not be read
    assert "Authorization_RequestDenied" in (result.reason or "")


def test_the_terminal_names_both_views_of_a_finding_under_the_scuba_profile(tmp_path: Path) -> None:
    done = run_cli("audit", "--demo", "--profile", "scuba", "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "FAIL    dns.dmarc.reject (contoso-health-news.org, high; 164.312(c)(1), 164.312(e)(1); "
        "SCuBA MS.EXO.4.2v1)"
    ) in done.stdout + done.stderr
