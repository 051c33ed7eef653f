"""The engine's verdicts, evidence and waivers, on snapshots built in the test."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from auditor.engine import EvaluationContext, evaluate
from auditor.model.section import Section
from auditor.model.snapshot import Snapshot, SourceStatus
from auditor.policy import PolicySet, parse_policy
from auditor.resources import policies_dir
from auditor.waivers import Waiver

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
TENANT = "contoso.onmicrosoft.com"


def _policies(*ids: str) -> PolicySet:
    loaded = {}
    for pid in ids:
        path = policies_dir() / f"{pid}.json"
        loaded[pid] = parse_policy(path.read_bytes(), path.name, str(path))
    return PolicySet(loaded)


def _section(
    name: str, data: Any, *, subject: str = TENANT, platform: str = "m365", **kw: Any
) -> Section:
    return Section(
        name=name,
        platform=platform,
        subject=subject,
        status=kw.pop("status", "ok"),
        data=data,
        source=kw.pop("source", "exo:Test"),
        collected_at=NOW,
        **kw,
    )  # type: ignore[arg-type]


def _snapshot(*sections: Section, tenants: tuple[str, ...] = (TENANT,)) -> Snapshot:
    snapshot = Snapshot(collected_at=NOW)
    for tenant in tenants:
        snapshot.add_subject("m365", "tenant", tenant)
    snapshot.sections.extend(sections)
    return snapshot


def _one(results: list[Any], control: str, subject: str = TENANT) -> Any:
    return next(r for r in results if r.control == control and r.subject == subject)


def test_pass_keeps_the_values_it_read_as_evidence() -> None:
    snapshot = _snapshot(
        _section("m365.exo.transport_config", [{"SmtpClientAuthenticationDisabled": True}])
    )
    result = _one(
        evaluate(
            _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
        ).results,
        "m365.exo.smtp-auth-disabled",
    )
    assert result.status == "pass"
    assert [(e.pointer, e.value) for e in result.evidence] == [
        ("/0/SmtpClientAuthenticationDisabled", True)
    ]
    assert result.evidence[0].source == "exo:Test"
    assert result.evidence[0].collected_at == "2026-11-27T12:00:00Z"


def test_fail_keeps_every_error_with_path_and_value() -> None:
    snapshot = _snapshot(
        _section(
            "m365.exo.transport_config",
            [
                {"SmtpClientAuthenticationDisabled": False},
                {"SmtpClientAuthenticationDisabled": "yes"},
            ],
        )
    )
    result = _one(
        evaluate(
            _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
        ).results,
        "m365.exo.smtp-auth-disabled",
    )
    assert result.status == "fail"
    assert [(e.pointer, e.value) for e in result.evidence] == [
        ("/0/SmtpClientAuthenticationDisabled", False),
        ("/1/SmtpClientAuthenticationDisabled", "yes"),
    ]
    assert (
        result.evidence[0].message
        == "is false; expected true (Get-TransportConfig SmtpClientAuthenticationDisabled)"
    )
    assert result.evidence[0].context_pointer == "/0"
    assert "SMTP AUTH is enabled" in result.reason


def test_missing_section_is_error_never_pass() -> None:
    snapshot = _snapshot()
    result = _one(
        evaluate(
            _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
        ).results,
        "m365.exo.smtp-auth-disabled",
    )
    assert result.status == "error"
    assert "m365.exo.transport_config was not collected" in result.reason


def test_failed_connector_reason_reaches_the_result() -> None:
    snapshot = _snapshot()
    snapshot.sources["m365"] = SourceStatus(
        title="Microsoft 365",
        status="error",
        platforms=["m365"],
        error="403 Forbidden: missing Exchange.ManageAsApp",
    )
    result = _one(
        evaluate(
            _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
        ).results,
        "m365.exo.smtp-auth-disabled",
    )
    assert result.status == "error"
    assert "Exchange.ManageAsApp" in result.reason


def test_error_section_is_error_with_its_reason() -> None:
    snapshot = _snapshot(
        _section("m365.exo.transport_config", None, status="error", reason="503 after 5 retries")
    )
    result = _one(
        evaluate(
            _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
        ).results,
        "m365.exo.smtp-auth-disabled",
    )
    assert (result.status, result.reason) == ("error", "503 after 5 retries")


def test_platform_out_of_scope_is_not_applicable() -> None:
    snapshot = Snapshot(collected_at=NOW)
    result = evaluate(
        _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
    ).results[0]
    assert result.status == "not_applicable"
    assert "Microsoft 365 is not in this audit's scope" in result.reason


def test_in_scope_platform_without_subjects_is_error() -> None:
    snapshot = Snapshot(collected_at=NOW)
    snapshot.scope["m365"] = {}
    result = evaluate(
        _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
    ).results[0]
    assert result.status == "error"


def test_one_result_per_subject() -> None:
    other = "fabrikam.onmicrosoft.com"
    snapshot = _snapshot(
        _section("m365.exo.transport_config", [{"SmtpClientAuthenticationDisabled": True}]),
        _section(
            "m365.exo.transport_config",
            [{"SmtpClientAuthenticationDisabled": False}],
            subject=other,
        ),
        tenants=(TENANT, other),
    )
    results = evaluate(
        _policies("m365.exo.smtp-auth-disabled"), snapshot, EvaluationContext("hipaa", NOW)
    ).results
    assert {(r.subject, r.status) for r in results} == {(TENANT, "pass"), (other, "fail")}


def _provider_snapshot(agreement: dict[str, Any] | None) -> Snapshot:
    return _snapshot(
        _section(
            "provider.microsoft",
            {
                "vendor": "microsoft",
                "services_in_use": ["exchange-online"],
                "agreement": agreement,
                "current": bool(agreement),
                "uncovered_services": [] if agreement else ["exchange-online"],
            },
        )
    )


def test_provider_control_is_inherited_with_the_attestation_as_evidence() -> None:
    agreement = {"vendor": "microsoft", "services": ["*"], "signed": "2024-01-10", "current": True}
    result = evaluate(
        _policies("provider.microsoft.baa"),
        _provider_snapshot(agreement),
        EvaluationContext("hipaa", NOW),
    ).results[0]
    assert result.status == "inherited"
    assert result.evidence[0].pointer == "/agreement"
    assert result.evidence[0].value["signed"] == "2024-01-10"


def test_provider_control_without_baa_fails() -> None:
    result = evaluate(
        _policies("provider.microsoft.baa"),
        _provider_snapshot(None),
        EvaluationContext("hipaa", NOW),
    ).results[0]
    assert result.status == "fail"


def _training(coverage: float) -> Snapshot:
    snapshot = Snapshot(collected_at=NOW)
    snapshot.add_subject("org", "organisation", "Clinic")
    snapshot.sections.append(
        _section(
            "org.training",
            {"latest": {"date": "2026-09-01", "age_days": 87, "coverage": coverage}, "count": 1},
            subject="Clinic",
            platform="org",
        )
    )
    return snapshot


def test_waiver_turns_a_fail_into_waived_with_its_details() -> None:
    waiver = Waiver("org.training.current", "campaign extended", "D. Reyes", dt.date(2026, 12, 31))
    evaluation = evaluate(
        _policies("org.training.current"), _training(0.5), EvaluationContext("hipaa", NOW, [waiver])
    )
    result = evaluation.results[0]
    assert result.status == "waived"
    assert result.waiver == {
        "control": "org.training.current",
        "reason": "campaign extended",
        "approved_by": "D. Reyes",
        "expires": "2026-12-31",
    }
    assert "Underlying failure" in result.reason and result.evidence
    assert evaluation.warnings == []


def test_waiver_holds_through_its_expiry_day_and_then_is_ignored_and_reported() -> None:
    on_the_day = Waiver("org.training.current", "r", "a", NOW.date())
    assert (
        evaluate(
            _policies("org.training.current"),
            _training(0.5),
            EvaluationContext("hipaa", NOW, [on_the_day]),
        )
        .results[0]
        .status
        == "waived"
    )
    expired = Waiver("org.training.current", "r", "a", NOW.date() - dt.timedelta(days=1))
    evaluation = evaluate(
        _policies("org.training.current"),
        _training(0.5),
        EvaluationContext("hipaa", NOW, [expired]),
    )
    assert evaluation.results[0].status == "fail"
    assert "expired on 2026-11-26" in evaluation.results[0].reason
    assert evaluation.warnings == [
        "[[waivers]] #1 (org.training.current) expired on 2026-11-26 and was ignored"
    ]


def test_waiver_for_another_subject_does_not_apply_and_unused_waivers_are_reported() -> None:
    waiver = Waiver("org.training.current", "r", "a", dt.date(2030, 1, 1), subject="Other Clinic")
    evaluation = evaluate(
        _policies("org.training.current"), _training(0.5), EvaluationContext("hipaa", NOW, [waiver])
    )
    assert evaluation.results[0].status == "fail"
    assert any("matched no failing result" in w for w in evaluation.warnings)


def test_waiver_never_hides_an_error() -> None:
    snapshot = Snapshot(collected_at=NOW)
    snapshot.add_subject("org", "organisation", "Clinic")
    waiver = Waiver("org.training.current", "r", "a", dt.date(2030, 1, 1))
    result = evaluate(
        _policies("org.training.current"), snapshot, EvaluationContext("hipaa", NOW, [waiver])
    ).results[0]
    assert result.status == "error"


def test_parameters_from_config_change_the_threshold() -> None:
    context = EvaluationContext(
        "hipaa", NOW, parameters={"org.training.current": {"min_coverage": 0.4}}
    )
    assert (
        evaluate(_policies("org.training.current"), _training(0.5), context).results[0].status
        == "pass"
    )


def test_profile_schema_is_stricter_under_the_proposed_rule() -> None:
    snapshot = Snapshot(collected_at=NOW)
    snapshot.add_subject("org", "organisation", "Clinic")
    test = {"date": "2026-09-01", "restore_hours": 96, "succeeded": True, "age_days": 87}
    snapshot.sections.append(
        _section(
            "org.restore_test",
            {"latest": test, "latest_successful": test, "count": 1},
            subject="Clinic",
            platform="org",
        )
    )
    policies = _policies("org.contingency.restore-tested")
    assert evaluate(policies, snapshot, EvaluationContext("hipaa", NOW)).results[0].status == "pass"
    nprm = evaluate(policies, snapshot, EvaluationContext("hipaa-nprm-2025", NOW)).results[0]
    assert nprm.status == "fail"
    assert nprm.evidence[0].pointer == "/latest_successful/restore_hours"


def test_multi_section_policy_maps_evidence_back_to_each_section() -> None:
    document = json.loads((policies_dir() / "m365.exo.smtp-auth-disabled.json").read_text())
    document.update(
        id="m365.exo.two-sources",
        source={"transport": "m365.exo.transport_config", "org": "m365.exo.organization_config"},
        schema={
            "type": "object",
            "properties": {
                "transport": {
                    "items": {"properties": {"SmtpClientAuthenticationDisabled": {"const": True}}}
                },
                "org": {"items": {"properties": {"OAuth2ClientProfileEnabled": {"const": True}}}},
            },
        },
        evidence=["/org/0/OAuth2ClientProfileEnabled"],
        examples=[
            {"name": "both fine", "expect": "pass", "input": {"transport": [], "org": []}},
            {
                "name": "modern auth off",
                "expect": "fail",
                "input": {"transport": [], "org": [{"OAuth2ClientProfileEnabled": False}]},
            },
        ],
    )
    policy = parse_policy(json.dumps(document).encode(), "m365.exo.two-sources.json", "test")
    snapshot = _snapshot(
        _section(
            "m365.exo.transport_config",
            [{"SmtpClientAuthenticationDisabled": True}],
            source="exo:Get-TransportConfig",
        ),
        _section(
            "m365.exo.organization_config",
            [{"OAuth2ClientProfileEnabled": False}],
            source="exo:Get-OrganizationConfig",
        ),
    )
    result = evaluate(
        PolicySet({policy.id: policy}), snapshot, EvaluationContext("hipaa", NOW)
    ).results[0]
    assert result.status == "fail"
    evidence = result.evidence[0]
    assert (evidence.section, evidence.pointer, evidence.source) == (
        "m365.exo.organization_config",
        "/0/OAuth2ClientProfileEnabled",
        "exo:Get-OrganizationConfig",
    )


@pytest.mark.parametrize("backend", ["jsonschema", "jsonschema-rs"])
def test_results_are_identical_whichever_validator_finds_them(backend: str) -> None:
    snapshot = _snapshot(
        _section("m365.exo.transport_config", [{"SmtpClientAuthenticationDisabled": False}])
    )
    reference = evaluate(
        _policies("m365.exo.smtp-auth-disabled"),
        snapshot,
        EvaluationContext("hipaa", NOW, backend="jsonschema"),
    ).results
    other = evaluate(
        _policies("m365.exo.smtp-auth-disabled"),
        snapshot,
        EvaluationContext("hipaa", NOW, backend=backend),
    ).results
    assert [r.to_json() for r in other] == [r.to_json() for r in reference]
