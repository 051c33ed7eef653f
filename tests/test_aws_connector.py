"""The AWS connector against moto's server on 127.0.0.1: boto3 over real HTTP, seeded per test.

moto does not implement GetConfigurationSetEventDestinations, nor setting an identity's DKIM
attributes; where a test depends on them it says so, and the normaliser is covered with a
recorded answer instead (test_event_destinations_normalise_from_a_recorded_answer)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from auditor.aws.session import AwsSession
from connectors.aws import ses
from connectors.aws.calls import AwsReader, RefusedCall
from connectors.aws.connector import AwsConnector, iam_policy

from aws_moto import ACCOUNT, KEYS, SUBJECT, audit, client, env, post
from helpers import member_json, members, run_cli


def test_an_optional_tls_policy_and_a_bare_identity_fail_with_evidence(
    moto: str, tmp_path: Path
) -> None:
    ses_client = client(moto, "sesv2")
    ses_client.create_configuration_set(
        ConfigurationSetName="phi", DeliveryOptions={"TlsPolicy": "REQUIRE"}
    )
    ses_client.create_configuration_set(
        ConfigurationSetName="marketing", DeliveryOptions={"TlsPolicy": "OPTIONAL"}
    )
    ses_client.create_email_identity(EmailIdentity="contoso-health.org", ConfigurationSetName="phi")
    ses_client.create_email_identity(EmailIdentity="alerts@contoso-health.org")

    code, results, stderr = audit(tmp_path, moto)
    assert code == 1, stderr
    tls = results[("aws.ses.tls-required", SUBJECT)]
    assert tls["status"] == "fail"
    evidence = {e["pointer"]: e for e in tls["evidence"]}
    optional = next(e for p, e in evidence.items() if p.endswith("/tls_policy"))
    assert optional["value"] == "OPTIONAL" and optional["context"]["name"] == "marketing"
    # moto never reports an identity as verified for sending, so the identity without a default
    # set is not counted against the control here (the policy's own examples cover that case);
    # the snapshot still shows it as moto described it.
    bundle = next((tmp_path / "out").glob("*.zip"))
    snapshot = member_json(bundle, "snapshot.json")
    identities = next(
        s["data"]["identities"] for s in snapshot["sections"] if s["name"] == "aws.ses.identities"
    )
    bare = next(i for i in identities if i["identity"] == "alerts@contoso-health.org")
    assert bare["configuration_set"] is None and bare["verified_for_sending"] is False
    assert optional["source"] == "aws:sesv2 us-east-1"
    # moto leaves a new domain identity's DKIM NOT_STARTED (and cannot change it).
    dkim = results[("aws.ses.dkim-enabled", SUBJECT)]
    assert dkim["status"] == "fail"
    assert {e["pointer"] for e in dkim["evidence"]} >= {
        "/identities/0/dkim/signing_enabled"
    } or any(e["pointer"].endswith("/dkim/signing_enabled") for e in dkim["evidence"])
    # moto has no GetConfigurationSetEventDestinations: the control is error, never pass.
    events = results[("aws.ses.event-logging", SUBJECT)]
    assert events["status"] == "error"
    assert "GetConfigurationSetEventDestinations in us-east-1 answered 404" in events["reason"]
    assert "<" not in events["reason"]  # moto's HTML error page, reduced to its text


def test_the_compliant_seed_passes_and_the_evidence_keeps_every_answer(
    moto: str, tmp_path: Path
) -> None:
    ses_client = client(moto, "sesv2")
    ses_client.create_configuration_set(
        ConfigurationSetName="phi", DeliveryOptions={"TlsPolicy": "REQUIRE"}
    )
    ses_client.create_email_identity(EmailIdentity="contoso-health.org", ConfigurationSetName="phi")

    code, results, stderr = audit(tmp_path, moto)
    assert results[("aws.ses.tls-required", SUBJECT)]["status"] == "pass", stderr
    assert code == 1  # DKIM still fails: moto cannot mark an identity's DKIM verified
    bundle = next((tmp_path / "out").glob("*.zip"))
    names = set(members(bundle))
    assert f"raw/aws/{ACCOUNT}/us-east-1/sesv2/GetConfigurationSet-phi.json" in names
    assert "raw/aws/us-east-1/sts/GetCallerIdentity.json" in names  # before the account is known
    index = member_json(bundle, "raw/index.json")["responses"]
    entry = next(e for e in index if e["path"].endswith("GetConfigurationSet-phi.json"))
    assert entry["request"]["ConfigurationSetName"] == "phi" and entry["status"] == 200
    everything = b"".join(members(bundle).values())
    assert KEYS["AWS_SECRET_ACCESS_KEY"].encode() not in everything
    manifest = member_json(bundle, "manifest.json")
    assert ACCOUNT in json.dumps(manifest["scope"])


def test_a_region_without_ses_use_is_not_applicable(moto: str, tmp_path: Path) -> None:
    _, results, stderr = audit(tmp_path, moto, regions='["eu-west-1"]')
    result = results[("aws.ses.tls-required", f"{ACCOUNT}/eu-west-1")]
    assert result["status"] == "not_applicable", stderr
    for control in ("aws.ses.dkim-enabled", "aws.ses.event-logging"):
        assert results[(control, f"{ACCOUNT}/eu-west-1")]["status"] == "not_applicable"
    assert "no configuration sets or identities" in result["reason"]


def _restricted_keys(url: str, actions: list[str]) -> dict[str, str]:
    iam = client(url, "iam")
    iam.create_user(UserName="auditor")
    key = iam.create_access_key(UserName="auditor")["AccessKey"]
    iam.put_user_policy(
        UserName="auditor",
        PolicyName="partial",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
        ),
    )
    post(url, "/moto-api/reset-auth", b"0")  # IAM checks on from the next request
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def test_access_denied_names_the_iam_action(moto: str, tmp_path: Path) -> None:
    keys = _restricted_keys(moto, ["sts:GetCallerIdentity", "ses:ListEmailIdentities"])
    _, results, stderr = audit(tmp_path, moto, keys=keys)
    tls = results[("aws.ses.tls-required", SUBJECT)]
    assert tls["status"] == "error", stderr
    assert "grant the IAM action ses:ListConfigurationSets" in tls["reason"]


def test_an_inventory_that_cannot_be_read_makes_the_services_list_error(
    moto: str, tmp_path: Path
) -> None:
    """provider.aws.baa must not pass on a partial list of services in use."""
    from connectors.aws.connector import ACTIONS

    keys = _restricted_keys(moto, [a for a in ACTIONS if a != "logs:DescribeLogGroups"])
    audit(tmp_path, moto, keys=keys)
    snapshot = member_json(next((tmp_path / "out").glob("*.zip")), "snapshot.json")
    vendors = next(s for s in snapshot["sections"] if s["name"] == "aws.vendors")
    assert vendors["status"] == "error" and vendors["data"] is None
    assert "could not tell every AWS service in use" in vendors["reason"]
    assert "aws.logs.log_groups in us-east-1" in vendors["reason"]
    assert "logs:DescribeLogGroups" in vendors["reason"]


def test_access_denied_to_the_region_list_stops_the_connector_naming_the_action(
    moto: str, tmp_path: Path
) -> None:
    keys = _restricted_keys(moto, ["sts:GetCallerIdentity"])
    code, results, stderr = audit(tmp_path, moto, regions="", keys=keys)
    assert code == 3 and results, stderr  # nothing failed, nothing could be judged: never 0
    for result in results.values():  # the account was never reached: every control is error
        assert result["status"] == "error"
        assert "grant the IAM action ec2:DescribeRegions" in result["reason"]
        assert "name them in [aws] regions instead" in result["reason"]


def test_only_read_calls_leave_the_connector() -> None:
    reader = AwsReader(AwsSession(), ctx=None)  # type: ignore[arg-type]  # refused before use
    with pytest.raises(RefusedCall, match="not a read call"):
        asyncio.run(
            reader.read("sesv2", "us-east-1", "delete_configuration_set", ConfigurationSetName="x")
        )
    with pytest.raises(RefusedCall):
        asyncio.run(reader.read("sesv2", "us-east-1", "put_configuration_set_delivery_options"))


def test_event_destinations_normalise_from_a_recorded_answer() -> None:
    """A GetConfigurationSetEventDestinations answer as AWS documents it (moto has none)."""
    answer = {
        "EventDestinations": [
            {
                "Name": "audit",
                "Enabled": True,
                "MatchingEventTypes": ["SEND", "REJECT", "BOUNCE", "COMPLAINT", "DELIVERY"],
                "KinesisFirehoseDestination": {
                    "IamRoleArn": "arn:aws:iam::123456789012:role/x",
                    "DeliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/ses",
                },
            },
            {"Name": "opens", "Enabled": False, "MatchingEventTypes": ["OPEN"]},
        ]
    }
    assert ses._destinations("phi", answer) == {
        "name": "phi",
        "event_destinations": [
            {
                "name": "audit",
                "enabled": True,
                "events": ["BOUNCE", "COMPLAINT", "DELIVERY", "REJECT", "SEND"],
            },
            {"name": "opens", "enabled": False, "events": ["OPEN"]},
        ],
    }


def test_permissions_prints_a_least_privilege_iam_policy(tmp_path: Path) -> None:
    policy = iam_policy()
    actions = policy["Statement"][0]["Action"]
    assert all(a.split(":")[1].startswith(("Get", "List", "Describe")) for a in actions)
    assert "ses:GetConfigurationSet" in actions
    proc = run_cli("permissions", "--format", "json", cwd=tmp_path)
    printed = json.loads(proc.stdout)["aws"]
    assert {p["name"] for p in printed["permissions"]} == set(actions)
    assert printed["iam_policy"] == policy
    text = run_cli("permissions", cwd=tmp_path).stdout
    assert '"ses:GetEmailIdentity"' in text and '"Version": "2012-10-17"' in text
    assert AwsConnector.name == "aws"


def test_ses_domain_identities_join_the_email_postureaudit(moto: str, tmp_path: Path) -> None:
    """The DNS connector waits for the AWS one and audits the SES domains too."""
    from connectors.dns.sandbox import DnsSandbox, Zone

    client(moto, "sesv2").create_email_identity(EmailIdentity="Notify.Clinic.Example")
    zone = Zone.from_data(
        {
            "notify.clinic.example": [{"TXT": "v=spf1 include:amazonses.com -all"}],
            "amazonses.com": [{"TXT": "v=spf1 ip4:199.255.192.0/22 -all"}],
            "_dmarc.notify.clinic.example": [
                {"TXT": "v=DMARC1; p=reject; rua=mailto:d@clinic.example"}
            ],
            "_dmarc.clinic.example": [{"TXT": "v=DMARC1; p=reject"}],
        }
    )
    with DnsSandbox(zone) as dns:
        (tmp_path / "commsaudit.toml").write_text(
            f'[aws]\nendpoint_url = "{moto}"\nregions = ["us-east-1"]\nmax_attempts = 1\n'
            f'[dns]\nnameservers = ["{dns.nameserver}"]\nsmtp_probe = false\ntimeout_seconds = 1.0\n'
            '[evidence]\nout = "out"\n[policies]\ncontrols = ["dns.*"]\n'
        )
        proc = run_cli(
            "audit",
            "--config",
            tmp_path / "commsaudit.toml",
            "--format",
            "json",
            cwd=tmp_path,
            env=env(tmp_path),
        )
    results = {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}
    assert results[("dns.dmarc.enforced", "notify.clinic.example")]["status"] == "pass", proc.stderr
    senders = results[("dns.senders.baa-covered", "notify.clinic.example")]
    assert senders["status"] == "fail"  # Amazon SES offers a BAA, but none is on file here
    assert any(e.get("context", {}).get("vendor") == "aws" for e in senders["evidence"])


def test_ses_easy_dkim_tokens_become_selectors() -> None:
    import datetime as dt

    from auditor.model.section import Section
    from connectors.dns.connector import DnsConnector

    identities = {
        "region": "us-east-1",
        "identities": [
            {
                "identity": "clinic.example",
                "type": "DOMAIN",
                "dkim": {"signing_enabled": True, "tokens": ["t1", "t2", "t3"]},
            },
            {
                "identity": "off.example",
                "type": "DOMAIN",
                "dkim": {"signing_enabled": False, "tokens": ["x1"]},
            },
        ],
    }
    upstream = [
        Section(
            "aws.ses.identities",
            "aws",
            f"{ACCOUNT}/us-east-1",
            "ok",
            identities,
            "aws:sesv2 us-east-1",
            dt.datetime.now(dt.UTC),
        )
    ]
    connector = DnsConnector({"dkim_selectors": ["s1"]}, Path())
    assert connector._domains(upstream) == ["clinic.example", "off.example"]
    assert connector._selectors("clinic.example", upstream) == [
        ("s1", "config"),
        ("t1", "ses"),
        ("t2", "ses"),
        ("t3", "ses"),
    ]
    assert connector._selectors("off.example", upstream) == [("s1", "config")]
