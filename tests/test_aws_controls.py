"""The account-wide and regional AWS controls against moto's server: a seed with one planted
problem per control, and a compliant seed.

moto cannot give the root user an MFA device (AccountMFAEnabled stays 0), so the compliant seed
still fails aws.iam.root-mfa; the test says so and checks the failure names the root user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aws_moto import ACCOUNT, SUBJECT, audit, client, throttling_proxy
from demo_aws import seed
from helpers import member_json


def _seed_noncompliant(url: str) -> None:
    s3 = client(url, "s3")
    s3.create_bucket(Bucket="phi-archive")  # no default encryption, no public access block
    s3.create_bucket(Bucket="trail-logs")
    cloudtrail = client(url, "cloudtrail")
    cloudtrail.create_trail(Name="org", S3BucketName="trail-logs", IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name="org")  # logging, but no log file validation and no KMS key
    cloudtrail.put_event_selectors(
        TrailName="org",
        EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}],
    )
    client(url, "kms").create_key(Description="phi")  # rotation off
    iam = client(url, "iam")
    iam.create_user(UserName="bob")
    iam.create_login_profile(UserName="bob", Password="Correct-Horse-9-Battery")  # no MFA
    iam.update_account_password_policy(MinimumPasswordLength=8, PasswordReusePrevention=1)
    client(url, "sns").create_topic(Name="alerts")  # not encrypted
    client(url, "logs").create_log_group(logGroupName="/phi/app")  # never expires: passes
    logs = client(url, "logs")
    logs.create_log_group(logGroupName="/phi/short")
    logs.put_retention_policy(logGroupName="/phi/short", retentionInDays=30)


def _seed_compliant(url: str) -> None:
    # The demo's account, with the TLS policy it declares rather than the one set by hand.
    seed(url, tls_policy="REQUIRE")


def _evidence(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["pointer"]: e for e in result["evidence"]}


def test_each_planted_problem_fails_its_control_with_evidence(moto: str, tmp_path: Path) -> None:
    _seed_noncompliant(moto)
    code, results, stderr = audit(tmp_path, moto, aws_config='buckets = {names = ["phi-*"]}\n')
    assert code == 1, stderr
    status = {control: r["status"] for (control, _), r in results.items()}

    encryption = results[("aws.s3.encryption", ACCOUNT)]
    assert encryption["status"] == "fail"
    planted = _evidence(encryption)["/buckets/0/encryption"]
    assert planted["value"] is None and planted["context"]["name"] == "phi-archive"
    # trail-logs is out of scope (not phi-*): listed, marked, not judged; the scope is recorded.
    bundle = next((tmp_path / "out").glob("*.zip"))
    snapshot = member_json(bundle, "snapshot.json")
    buckets = next(x for x in snapshot["sections"] if x["name"] == "aws.s3.buckets")["data"]
    assert buckets["scope"] == {"rule": "names or tags", "names": ["phi-*"], "tags": {}}
    assert {b["name"]: b["in_scope"] for b in buckets["buckets"]} == {
        "phi-archive": True,
        "trail-logs": False,
    }
    assert len(encryption["evidence"]) == 1

    trail = results[("aws.cloudtrail.multi-region-logging", ACCOUNT)]
    assert trail["status"] == "fail"
    trails = _evidence(trail)["/trails"]["value"]
    assert trails[0]["log_file_validation"] is False and trails[0]["logging"] is True
    # The event selectors are read and kept as evidence (the catalog does not judge them).
    assert (trails[0]["management_events"], trails[0]["data_events"]) == ("WriteOnly", False)

    rotation = results[("aws.kms.rotation", SUBJECT)]
    assert rotation["status"] == "fail"
    assert _evidence(rotation)["/keys/0/rotation_enabled"]["value"] is False

    root = results[("aws.iam.root-mfa", ACCOUNT)]
    assert root["status"] == "fail"
    assert _evidence(root)["/AccountMFAEnabled"]["value"] == 0

    console = results[("aws.iam.console-users-mfa", ACCOUNT)]
    assert console["status"] == "fail"
    bob = next(e for e in console["evidence"] if e["pointer"].endswith("/mfa_devices"))
    assert bob["context"]["user"] == "bob" and bob["value"] == 0

    password = _evidence(results[("aws.iam.password-policy", ACCOUNT)])
    assert password["/minimum_length"]["value"] == 8
    assert password["/reuse_prevention"]["value"] == 1

    topic = results[("aws.sns.topics-encrypted", SUBJECT)]
    assert topic["status"] == "fail"
    assert _evidence(topic)["/topics/0/kms_key"]["context"]["arn"].endswith(":alerts")

    retention = results[("aws.logs.retention", SUBJECT)]
    assert retention["status"] == "fail"
    short = next(e for e in retention["evidence"] if e["pointer"].endswith("/retention_days"))
    assert short["value"] == 30 and short["context"]["name"] == "/phi/short"

    assert status["aws.s3.public-access-blocked"] == "fail"


def test_the_compliant_seed_passes(moto: str, tmp_path: Path) -> None:
    _seed_compliant(moto)
    code, results, stderr = audit(tmp_path, moto)
    assert code == 1, stderr  # root MFA, below
    status = {control: r["status"] for (control, _), r in results.items()}
    for control in (
        "aws.s3.encryption",
        "aws.s3.public-access-blocked",
        "aws.cloudtrail.multi-region-logging",
        "aws.kms.rotation",
        "aws.iam.console-users-mfa",
        "aws.iam.password-policy",
        "aws.sns.topics-encrypted",
        "aws.logs.retention",
    ):
        assert status[control] == "pass", (
            control,
            results[next(k for k in results if k[0] == control)]["reason"],
            stderr,
        )
    # moto cannot register an MFA device for the root user.
    assert status["aws.iam.root-mfa"] == "fail"


def test_vendors_in_use_name_the_services_found(moto: str, tmp_path: Path) -> None:
    _seed_noncompliant(moto)
    audit(tmp_path, moto)
    bundle = next((tmp_path / "out").glob("*.zip"))
    snapshot = member_json(bundle, "snapshot.json")
    vendors = next(s for s in snapshot["sections"] if s["name"] == "aws.vendors")["data"]
    assert vendors[0]["services"] == ["cloudtrail", "cloudwatch-logs", "kms", "s3", "sns"]


def test_the_iam_policy_covers_every_call_the_connector_makes(moto: str, tmp_path: Path) -> None:
    """Every request in the evidence maps to an action in the printed IAM policy, and the
    policy asks for nothing the connector does not use."""
    from connectors.aws.calls import iam_action
    from connectors.aws.connector import ACTIONS

    _seed_compliant(moto)
    client(moto, "sesv2").create_configuration_set(ConfigurationSetName="phi")
    client(moto, "sesv2").create_email_identity(EmailIdentity="clinic.example")
    scope = 'buckets = {tags = {DataClass = "phi"}}\nlog_groups = {tags = {DataClass = "phi"}}\n'
    audit(tmp_path, moto, aws_config=scope, regions="")
    bundle = next((tmp_path / "out").glob("*.zip"))
    used = set()
    for entry in member_json(bundle, "raw/index.json")["responses"]:
        request = entry["request"]
        if entry["connector"] != "aws":
            continue
        signing = client(moto, request["service"]).meta.service_model.signing_name
        used.add(iam_action(request["service"], request["operation"], signing))
    assert used <= set(ACTIONS), used - set(ACTIONS)
    assert set(ACTIONS) - used == set(), set(ACTIONS) - used


@pytest.mark.parametrize(
    ("basic", "advanced", "expected"),
    [
        (None, None, ("All", False)),  # CloudTrail's default
        (
            [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True}],
            None,
            ("ReadOnly", False),
        ),
        (
            [{"ReadWriteType": "All", "IncludeManagementEvents": False, "DataResources": [{}]}],
            None,
            (None, True),
        ),
        (
            None,
            [
                {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
                {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]},
            ],
            ("All", True),
        ),
        (
            None,
            [
                {
                    "fieldSelectors": [
                        {"field": "eventCategory", "equals": ["Management"]},
                        {"field": "readOnly", "equals": ["false"]},
                    ]
                }
            ],
            ("WriteOnly", False),
        ),  # Pulumi's spelling
    ],
)
def test_event_selectors_say_which_events_a_trail_records(
    basic: Any, advanced: Any, expected: tuple[str | None, bool]
) -> None:
    from connectors.aws.account import recorded_events

    found = recorded_events(basic, advanced)
    assert (found["management_events"], found["data_events"]) == expected


def test_a_throttled_call_makes_its_controls_error_not_pass(moto: str, tmp_path: Path) -> None:
    _seed_compliant(moto)
    with throttling_proxy(moto, "DescribeTrails") as proxy:
        _, results, stderr = audit(tmp_path, proxy)
    trail = results[("aws.cloudtrail.multi-region-logging", ACCOUNT)]
    assert trail["status"] == "error", stderr
    assert "ThrottlingException" in trail["reason"] or "Rate exceeded" in trail["reason"]
    # The rest of the account was read through the same endpoint and judged as usual.
    assert results[("aws.kms.rotation", SUBJECT)]["status"] == "pass"
