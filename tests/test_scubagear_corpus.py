"""commsaudit's verdicts on CISA ScubaGear's own unit-test scenarios (tests/data/scubagear).

Every converted case must get ScubaGear's verdict, except the cases listed below, where
commsaudit's control deliberately differs from the SCuBA policy it is compared with (each with
the reason, also given in the control's rationale or the catalog), or where ScubaGear's unit
input leaves out a member every published answer carries and commsaudit, failing closed, does
not pass on what it cannot see. A case that starts or stops disagreeing fails this test: the
agreement figure cannot drift unnoticed.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.normalise import M365Settings

from helpers import REPO
from m365_verdicts import NOW, evaluate_fetched

CORPUS = REPO / "tests" / "data" / "scubagear"
V1_CA = "graph/v1.0/identity/conditionalAccess/policies.json"
BETA_CA = "graph/beta/identity/conditionalAccess/policies.json"
BASE = REPO / "fixtures" / "tenants" / "contoso-health"

# Why commsaudit's verdict differs, by kind of difference: commsaudit passes what SCuBA fails
# (the default), or, for the kinds named in STRICTER, gives the verdict named there instead.
REASONS = {
    "phishing-resistant-is-mfa": (
        "MS.AAD.3.2 ('alternative MFA') fails a strength made only of phishing-resistant "
        "methods, because MS.AAD.3.1 covers those; m365.mfa.all-users asks for MFA, which "
        "phishing-resistant methods are, so it passes (ScubaGear's own 3.1 passes these too)."
    ),
    "forwarding-blocked-by-outbound-policy": (
        "ScubaGear fails any remote domain that allows automatic forwarding. These tenants' "
        "outbound spam policy sets AutoForwardingMode Off, which blocks automatic external "
        "forwarding whatever a remote domain allows (Microsoft: 'Control automatic external "
        "email forwarding'); m365.exo.external-forwarding-blocked requires that policy setting."
    ),
    "initial-domain-not-sending": (
        "ScubaGear checks DKIM on the initial *.onmicrosoft.com domain too; the catalog sets "
        "that domain aside for m365.exo.dkim-signing (Microsoft signs it with its own keys)."
    ),
    "phi-not-pii-types": (
        "SCuBA's DLP policy protects PII (SSN, ITIN and credit card numbers, all three); "
        "m365.dlp.phi-protection asks for PHI types (SSN, ICD codes, DEA, MBI): a rule for SSN "
        "with block counts."
    ),
    "devices-not-in-catalog": (
        "SCuBA also requires Endpoint DLP (Devices); the catalog's m365.dlp.all-workloads covers "
        "Exchange, SharePoint, OneDrive and Teams."
    ),
    "blocking-external-is-enough": (
        "SCuBA requires blocking everyone (BlockAccessScope All); for HIPAA, blocking PHI from "
        "leaving the organisation (PerUser: external users) or encrypting it is the safeguard."
    ),
    "new-and-existing-guests": (
        "SCuBA allows only existing guests; the catalog's "
        "m365.sharepoint.external-sharing-restricted fails anonymous links only (guests must sign "
        "in or verify, so access is by an identified person)."
    ),
    "unset-client-apps-are-all": (
        "ScubaGear requires the literal 'all' among the client app types; an empty list is "
        "Graph's unconfigured condition (the beta list-policies example writes it so), which "
        "applies to every client app, so commsaudit reads it as all, as it does for every "
        "Conditional Access control."
    ),
    "precedence-decides-retention": (
        "ScubaGear passes when any audit log retention policy keeps records twelve months; "
        "Microsoft applies the policy with the lower Priority first ('a policy with a value of "
        "5 takes priority over a policy with a value of 10'), so a six-month policy ahead of "
        "the twelve-month one keeps the records it selects six months: m365.audit.log-retention "
        "fails that."
    ),
    "enable-not-in-input": (
        "ScubaGear's unit input gives Safe Attachments policies without Enable, which every "
        "published Get-SafeAttachmentPolicy answer carries; Enable false scans nothing whatever "
        "the action (Set-SafeAttachmentPolicy), so a policy not known to be on does not pass."
    ),
    "priority-not-in-input": (
        "ScubaGear's unit input gives a custom rule without Priority, which every published "
        "Get-*Rule answer carries; a rule whose place in the order is unknown may come before "
        "the preset that covers everyone, so commsaudit judges its policy too."
    ),
    "preset-policy-not-in-input": (
        "ScubaGear's unit input has an enabled preset rule naming a policy that is not among "
        "the policies given (a real tenant lists every preset policy it has); its recipients get "
        "a policy nothing can be said of, so the section is an error, not a verdict."
    ),
}
# The kinds of difference where commsaudit is the stricter, and the verdict it gives.
STRICTER = {
    "precedence-decides-retention": "fail",
    "enable-not-in-input": "fail",
    "priority-not-in-input": "fail",
    "preset-policy-not-in-input": "error",
}
KNOWN_DIFFERENCES = {
    ("MS.AAD.3.2v2", "test_IsGeneralMFA_WindowsHelloForBusiness_Incorrect"): (
        "phishing-resistant-is-mfa"
    ),
    ("MS.AAD.3.2v2", "test_IsGeneralMFA_Fido2_Incorrect"): "phishing-resistant-is-mfa",
    ("MS.AAD.3.2v2", "test_IsGeneralMFA_X509CertificateMultiFactor_Incorrect"): (
        "phishing-resistant-is-mfa"
    ),
    ("MS.EXO.1.1v2", "test_AutoForwardEnabled_Incorrect_V1"): (
        "forwarding-blocked-by-outbound-policy"
    ),
    ("MS.EXO.1.1v2", "test_AutoForwardEnabled_Incorrect_V2"): (
        "forwarding-blocked-by-outbound-policy"
    ),
    ("MS.EXO.1.1v2", "test_AutoForwardEnabled_Incorrect_V3"): (
        "forwarding-blocked-by-outbound-policy"
    ),
    ("MS.EXO.1.1v2", "test_AutoForwardEnabled_Incorrect_V4"): (
        "forwarding-blocked-by-outbound-policy"
    ),
    ("MS.EXO.3.1v1", "test_Enabled_Incorrect_V4"): "initial-domain-not-sending",
    ("MS.SECURITYSUITE.3.1v1", "test_ContentContainsSensitiveInformation_Incorrect_V2"): (
        "phi-not-pii-types"
    ),
    ("MS.SECURITYSUITE.3.1v1", "test_ContentContainsSensitiveInformation_Incorrect_V3"): (
        "phi-not-pii-types"
    ),
    ("MS.SECURITYSUITE.3.2v1", "test_Locations_Incorrect_V5"): "devices-not-in-catalog",
    ("MS.SECURITYSUITE.3.3v1", "test_BlockAccess_Incorrect_V2"): "blocking-external-is-enough",
    ("MS.SECURITYSUITE.3.3v1", "test_BlockAccess_Incorrect_V4"): "phi-not-pii-types",
    ("MS.SECURITYSUITE.3.3v1", "test_BlockAccess_Incorrect_V5"): "phi-not-pii-types",
    ("MS.SHAREPOINT.1.1v1", "test_SharingCapability_Incorrect_V1"): "new-and-existing-guests",
    ("MS.AAD.9.1v1", "test_MissingClientAppTypes_Incorrect_V1"): "unset-client-apps-are-all",
    ("MS.SECURITYSUITE.5.2v1", "test_AuditLogRetention_Correct_MultiplePolicies"): (
        "precedence-decides-retention"
    ),
    **{
        ("MS.SECURITYSUITE.1.3v1", f"test_{name}_1_3"): "enable-not-in-input"
        for name in (
            "StrictWins_Compliant",
            "StandardWins_Compliant",
            "CustomWins_Compliant",
            "CustomRuleDomainSupersetWithExtra_StillCovers",
            "CustomRuleScoped_FallsToBuiltIn",
            "NoCustomRules_FallsToBuiltIn",
        )
    },
    (
        "MS.SECURITYSUITE.6.2v1",
        "test_AllowedDomains_Correct_StrictCompliantAllOthersNotEvaluated",
    ): ("priority-not-in-input"),
    **{
        ("MS.SECURITYSUITE.6.1v1", f"test_SpamPolicy_{name}"): "preset-policy-not-in-input"
        for name in (
            "Correct_DefaultAndStandard",
            "Incorrect_StandardPresetSpamAction",
            "Incorrect_StrictPresetPhishSpamAction",
            "Correct_PresetCompliantCustomNotEvaluated",
            "Correct_StrictCompliantDefaultNotEvaluated",
            "Incorrect_StrictPartialRecipientsDefaultEvaluated",
        )
    },
    **{
        ("MS.SECURITYSUITE.6.2v1", f"test_AllowedDomains_{name}"): "preset-policy-not-in-input"
        for name in (
            "Incorrect_StandardPreset",
            "Incorrect_StrictPreset",
            "Correct_PresetCompliantCustomNotEvaluated",
            "Correct_StrictCompliantDefaultNotEvaluated",
            "Incorrect_StrictPartialRecipientsDefaultEvaluated",
        )
    },
}


def _cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for path in sorted(CORPUS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        out += [(document, case) for case in document["cases"]]
    return out


@cache
def _base() -> tuple[dict[str, Any], dict[str, Fetched]]:
    return read_recorded_tenant(BASE, NOW)


def _verdict(document: dict[str, Any], case: dict[str, Any]) -> tuple[str, str]:
    info, base = _base()
    fetched = dict(base)
    for path, body in case["files"].items():
        key = path.removesuffix(".json")
        fetched[key] = Fetched(key, 200, body, NOW)
    if V1_CA in case["files"] and BETA_CA not in case["files"]:
        # ScubaGear reads Conditional Access from Graph beta (ExportAADProvider.psm1,
        # Get-MgBetaIdentityConditionalAccessPolicy): its policies are beta's answer too, which
        # the connector reads for the conditions v1.0 leaves out.
        key = BETA_CA.removesuffix(".json")
        fetched[key] = Fetched(key, 200, case["files"][V1_CA], NOW)
    settings = M365Settings(
        break_glass=tuple(case["config"].get("break_glass_accounts", [])),
        cloud=case["config"].get("cloud", "global"),  # ScubaGear's M365Environment
    )
    results = evaluate_fetched(
        info,
        fetched,
        settings,
        document["profile"],
        controls=[document["control"]],
        parameters={document["control"]: case["parameters"]} if "parameters" in case else None,
    )
    result = results[document["control"]]
    return result.status, result.reason or ""


CASES = _cases()


def test_the_corpus_is_whole() -> None:
    assert len(CASES) == 541
    assert all(c["expect"] in ("pass", "fail", "not_applicable") for _d, c in CASES)
    assert set(KNOWN_DIFFERENCES.values()) <= set(REASONS)
    assert set(STRICTER) <= set(REASONS)


@pytest.mark.parametrize(
    ("document", "case"),
    CASES,
    ids=[f"{d['scuba_policy']}::{c['test']}" for d, c in CASES],
)
def test_scubagear_verdict(document: dict[str, Any], case: dict[str, Any]) -> None:
    status, reason = _verdict(document, case)
    known = KNOWN_DIFFERENCES.get((document["scuba_policy"], case["test"]))
    if known is None:
        # Judged, never an error; not applicable only where ScubaGear says so too.
        assert status in ("pass", "fail") or status == case["expect"], f"{status}: {reason}"
        assert status == case["expect"], f"{case['note']}\ncommsaudit: {status}: {reason}"
    elif known in STRICTER:
        # commsaudit does not pass (or judge) what it cannot see, for the reason given.
        assert status == STRICTER[known] != case["expect"], f"{REASONS[known]}\n{reason}"
    else:
        # A documented difference: commsaudit passes what SCuBA fails, for the reason given.
        assert (case["expect"], status) == ("fail", "pass"), REASONS[known]


def test_agreement_figure() -> None:
    agree = sum(1 for d, c in CASES if (d["scuba_policy"], c["test"]) not in KNOWN_DIFFERENCES)
    assert (agree, len(CASES)) == (506, 541)
    assert not [
        key
        for key in KNOWN_DIFFERENCES
        if not any((d["scuba_policy"], c["test"]) == key for d, c in CASES)
    ]
