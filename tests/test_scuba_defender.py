"""Exchange Online Protection and Defender for Office 365 in the scuba profile (#17): the threat
policies in force (connectors/m365/threat_policies.py), alert policies, DLP notifications and the
external-sender warning rule; demo verdicts, and what a tenant without Defender gets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

from m365_sandbox import sandbox_config

from auditor.engine import EvaluationContext, evaluate
from auditor.model.snapshot import Snapshot
from auditor.policy import load_policies
from auditor.resources import policies_dir
from connectors.base import CollectContext
from connectors.m365.connector import M365Connector
from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.normalise import M365Settings
from connectors.m365.sandbox.server import SECRET_ENV, Sandbox
from connectors.m365.threat_policies import MALWARE, SAFE_LINKS, in_force, rule_reach

from conftest import ScubaDemo
from helpers import REPO
from m365_verdicts import NOW, evaluate_fetched

CONTOSO = REPO / "fixtures" / "tenants" / "contoso-health"
CONTROLS = {
    "m365.defender.click-to-run-attachments-blocked",
    "m365.defender.zero-hour-purge",
    "m365.defender.safe-attachments-block",
    "m365.defender.safe-attachments-files",
    "m365.defender.user-impersonation-protection",
    "m365.defender.domain-impersonation-protection",
    "m365.defender.partner-impersonation-protection",
    "m365.defender.safety-tips",
    "m365.purview.dlp-user-notifications",
    "m365.purview.alert-policies-enabled",
    "m365.exo.spam-not-to-inbox",
    "m365.exo.no-allowed-sender-domains",
    "m365.defender.safe-links-everywhere",
    "m365.defender.safe-links-scan-downloads",
    "m365.defender.safe-links-click-tracking",
    "m365.exo.external-sender-warning",
}
# Read only with Defender for Office 365 (Plan 1 or 2), and the controls that need them.
DEFENDER_FILES = (
    "Get-SafeLinksPolicy",
    "Get-SafeLinksRule",
    "Get-SafeAttachmentPolicy",
    "Get-SafeAttachmentRule",
    "Get-ATPProtectionPolicyRule",
    "Get-ATPBuiltInProtectionRule",
    "Get-AtpPolicyForO365",
)
DEFENDER_CONTROLS = {
    "m365.defender.safe-attachments-block",
    "m365.defender.safe-attachments-files",
    "m365.defender.safe-links-everywhere",
    "m365.defender.safe-links-scan-downloads",
    "m365.defender.safe-links-click-tracking",
}
DOMAINS = {"contoso-health.org", "contoso-health.onmicrosoft.com"}


def _demo(tenant: str, scuba_demo: ScubaDemo) -> dict[str, str]:
    return {r["control"]: r["status"] for r in scuba_demo(tenant) if r["control"] in CONTROLS}


def test_the_clinic_demo_passes_every_defender_control(scuba_demo: ScubaDemo) -> None:
    assert _demo("contoso-health", scuba_demo) == dict.fromkeys(CONTROLS, "pass")


def test_fabrikam_fails_every_defender_control(scuba_demo: ScubaDemo) -> None:
    # Planted: no preset policies; the default anti-malware policy lacks vbe and ZAP; a front
    # desk anti-spam policy adds an X-header only; an allowed sender domain; the default
    # anti-phishing policy with impersonation protection and two safety tips off; custom Safe
    # Links and Safe Attachments policies for everyone that check little and allow malware;
    # Defender for SharePoint/OneDrive/Teams off; the external-sender rule disabled; the
    # forwarding alert off; a DLP rule that tells no one.
    assert _demo("fabrikam-clinic", scuba_demo) == dict.fromkeys(CONTROLS, "fail")


def _verdicts(files: dict[str, Any]) -> dict[str, tuple[str, str]]:
    info, base = read_recorded_tenant(CONTOSO, NOW)
    fetched = dict(base)
    for key, body in files.items():
        fetched[key] = Fetched(key, 200, body, NOW)
    results = evaluate_fetched(info, fetched, M365Settings(), "scuba", sorted(CONTROLS))
    return {c: (r.status, r.reason or "") for c, r in results.items()}


def _contoso(path: str) -> Any:
    return json.loads((CONTOSO / f"{path}.json").read_text(encoding="utf-8"))


def test_a_preset_with_an_exception_leaves_the_default_policy_to_be_judged() -> None:
    presets = _contoso("exo/Get-EOPProtectionPolicyRule")
    presets[0]["ExceptIfSentToMemberOf"] = ["radiology@contoso-health.org"]
    malware = _contoso("exo/Get-MalwareFilterPolicy")
    default = next(p for p in malware if p["IsDefault"])
    default["ZapEnabled"] = False  # what the excepted recipients get
    got = _verdicts(
        {"exo/Get-EOPProtectionPolicyRule": presets, "exo/Get-MalwareFilterPolicy": malware}
    )
    assert got["m365.defender.zero-hour-purge"][0] == "fail"
    assert "/in_force/1/ZapEnabled" in got["m365.defender.zero-hour-purge"][1]
    # ScubaGear counts a preset as covering everyone whatever its exceptions: it would pass.


def test_a_custom_rule_scoped_to_some_domains_or_unknown_conditions_does_not_cover_everyone() -> (
    None
):
    base = {"State": "Enabled", "Priority": 0, "SafeLinksPolicy": "P"}
    assert rule_reach(base, DOMAINS) == "everyone"
    assert rule_reach({**base, "RecipientDomainIs": sorted(DOMAINS)}, DOMAINS) == "everyone"
    assert rule_reach({**base, "RecipientDomainIs": ["contoso-health.org"]}, DOMAINS) == "some"
    assert rule_reach({**base, "RecipientDomainIs": sorted(DOMAINS)}, None) == "some"
    assert rule_reach({**base, "Conditions": ["Some.NewPredicate"]}, DOMAINS) == "some"
    assert rule_reach({**base, "ExceptIfSomethingNew": ["x"]}, DOMAINS) == "some"
    assert rule_reach({**base, "State": "Paused"}, DOMAINS) == "some"  # unknown: judged
    assert rule_reach({**base, "State": "Disabled"}, DOMAINS) == "none"


def test_safe_links_with_no_policy_for_everyone_fails() -> None:
    policies = [{"Identity": "P", "TrackClicks": True}]
    rules = [{"State": "Enabled", "Priority": 0, "SafeLinksPolicy": "P", "SentTo": ["a@b.c"]}]
    section = in_force(SAFE_LINKS, policies, rules, [], DOMAINS, last_rules=[])
    assert section["everyone_covered"] is False
    assert [p["applies_to"] for p in section["in_force"]] == ["some"]
    info, base = read_recorded_tenant(CONTOSO, NOW)
    fetched = dict(base)
    for key, body in {
        "exo/Get-SafeLinksPolicy": policies,
        "exo/Get-SafeLinksRule": rules,
        "exo/Get-ATPProtectionPolicyRule": [],
        "exo/Get-ATPBuiltInProtectionRule": [],
    }.items():
        fetched[key] = Fetched(key, 200, body, NOW)
    results = evaluate_fetched(
        info, fetched, M365Settings(), "scuba", ["m365.defender.safe-links-click-tracking"]
    )
    result = results["m365.defender.safe-links-click-tracking"]
    assert result.status == "fail"
    assert "/everyone_covered" in (result.reason or "")


def test_the_precedence_order_is_strict_standard_custom_default() -> None:
    policies = [
        {"Identity": "Default", "IsDefault": True},
        {"Identity": "Custom", "IsDefault": False},
        {"Identity": "Standard Preset Security Policy17", "IsDefault": False},
        {"Identity": "Strict Preset Security Policy17", "IsDefault": False},
    ]
    presets = [
        {"Identity": "Strict Preset Security Policy", "State": "Enabled", "SentTo": ["x@y.z"]},
        {"Identity": "Standard Preset Security Policy", "State": "Disabled"},
    ]
    rules = [{"MalwareFilterPolicy": "Custom", "State": "Enabled", "Priority": 0}]
    section = in_force(MALWARE, policies, rules, presets, DOMAINS)
    assert [(p["Identity"], p["applies_to"]) for p in section["in_force"]] == [
        ("Strict Preset Security Policy17", "some"),
        ("Custom", "everyone"),
    ]


def test_an_external_sender_rule_with_an_exception_does_not_count() -> None:
    rules = _contoso("exo/Get-TransportRule")
    rules[0]["Exceptions"] = [
        "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.SenderDomainIsPredicate"
    ]
    status, reason = _verdicts({"exo/Get-TransportRule": rules})["m365.exo.external-sender-warning"]
    assert status == "fail"
    assert "exceptions" in reason


def test_alert_policies_missing_from_the_answer_fail() -> None:
    alerts = [
        a
        for a in _contoso("compliance/Get-ProtectionAlert")
        if a["Name"] != "Messages have been delayed"
    ]
    assert (
        _verdicts({"compliance/Get-ProtectionAlert": alerts})[
            "m365.purview.alert-policies-enabled"
        ][0]
        == "fail"
    )


def _collect(tenant: Path) -> CollectContext:
    with Sandbox(tenant) as sandbox:
        limits = {"retries": 1, "backoff_seconds": 0.05, "timeout_seconds": 10}
        config = sandbox_config(sandbox, limits=limits)
        connector = M365Connector(config, Path())
        connector.environ = {SECRET_ENV: sandbox.client_secret}
        ctx = CollectContext(
            connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 120
        )
        asyncio.run(connector.collect(ctx))
        asked = {e.recorded for e in sandbox.requests_for("exo/*") if e.recorded}
    assert {f"exo/{c}" for c in DEFENDER_FILES} <= asked
    return ctx


def test_a_tenant_without_defender_is_an_error_that_names_the_licence(tmp_path: Path) -> None:
    tenant = tmp_path / "no-defender"
    shutil.copytree(CONTOSO, tenant)
    for cmdlet in DEFENDER_FILES:
        (tenant / "exo" / f"{cmdlet}.json").unlink()  # the sandbox answers as the service does
    ctx = _collect(tenant)
    sections = {s.name: s for s in ctx.sections}
    for name in (
        "m365.exo.safe_links_policies",
        "m365.exo.safe_attachment_policies",
        "m365.exo.atp_policy",
    ):
        assert sections[name].status == "error"
        assert "Microsoft Defender for Office 365" in (sections[name].reason or "")
        assert "is not recognized" in (sections[name].reason or "")
    # Exchange Online Protection's own policies are read and judged as usual.
    assert sections["m365.exo.malware_filter_policies"].status == "ok"
    snapshot = Snapshot(collected_at=ctx.now)
    for platform, kind, subject in ctx.subjects:
        snapshot.add_subject(platform, kind, subject)
    snapshot.sections.extend(ctx.sections)
    policies = load_policies([policies_dir()]).select("scuba", sorted(CONTROLS))
    results = evaluate(policies, snapshot, EvaluationContext("scuba", ctx.now)).results
    statuses = {r.control: r.status for r in results}
    assert {c for c, s in statuses.items() if s == "error"} == DEFENDER_CONTROLS
    assert {c: s for c, s in statuses.items() if c not in DEFENDER_CONTROLS} == dict.fromkeys(
        CONTROLS - DEFENDER_CONTROLS, "pass"
    )


def test_a_forbidden_alert_policy_read_is_an_error_not_a_pass() -> None:
    info, base = read_recorded_tenant(CONTOSO, NOW)
    fetched = dict(base)
    key = "compliance/Get-ProtectionAlert"
    fetched[key] = Fetched(key, 403, None, NOW, "compliance/Get-ProtectionAlert answered 403")
    results = evaluate_fetched(
        info, fetched, M365Settings(), "scuba", ["m365.purview.alert-policies-enabled"]
    )
    assert results["m365.purview.alert-policies-enabled"].status == "error"


def test_only_a_refusal_of_a_defender_cmdlet_names_the_licence() -> None:
    """A tenant without Defender refuses its cmdlets; a server fault says nothing of the licence,
    and the reason must not send the reader to buy one."""
    info, base = read_recorded_tenant(CONTOSO, NOW)
    control = "m365.defender.safe-links-click-tracking"
    key = "exo/Get-SafeLinksPolicy"
    reasons = {}
    for status, text in (
        (503, "ServiceUnavailable: The service is temporarily unavailable."),
        (403, "Forbidden: The term 'Get-SafeLinksPolicy' is not recognized as a cmdlet."),
    ):
        fetched = dict(base)
        fetched[key] = Fetched(key, status, None, NOW, f"{key} answered {status}: {text}")
        result = evaluate_fetched(info, fetched, M365Settings(), "scuba", [control])[control]
        assert result.status == "error"
        reasons[status] = result.reason or ""
    assert "Defender for Office 365" not in reasons[503], reasons[503]
    assert "temporarily unavailable." in reasons[503]
    assert "cmdlet. Safe Links, Safe Attachments" in reasons[403], reasons[403]
    assert ".." not in reasons[403] + reasons[503]
