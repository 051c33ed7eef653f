"""Contoso Health's AWS account, as the demo replays it.

`python tests/demo_aws.py` seeds moto's server with the account, runs the real AWS connector
against it, and writes its sections to fixtures/demo/contoso-health/recorded-sections.json.
test_demo_aws.py re-records and checks the file still matches, so the recording stays what the
connector produces.

The account is what the sample Pulumi stack declares, except that someone set the `phi-notices`
configuration set's TLS policy to OPTIONAL by hand: aws.ses.tls-required fails live, and
pulumi.declared-matches-live shows the drift.

moto cannot show three things the account has; they are filled in after recording, each below:
the configuration set's event destinations (moto has no GetConfigurationSetEventDestinations),
the domain identity's verified DKIM (moto never verifies), and the root user's MFA (moto has no
root MFA device)."""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aws_moto import ACCOUNT, audit, client
from helpers import member_json

TARGET = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "demo"
    / "contoso-health"
    / "recorded-sections.json"
)
EXPORT = TARGET.with_name("contoso-comms-prod.export.json")
REGION = "us-east-1"
EVENTS = ["BOUNCE", "COMPLAINT", "DELIVERY", "REJECT", "SEND"]
# What moto makes up afresh on each run (beside the key id): a recording compares without them.
VOLATILE = ("tokens",)


def seed(url: str, tls_policy: str = "OPTIONAL") -> None:
    """The account as the sample stack declares it, but for `tls_policy` on phi-notices."""
    kms = client(url, "kms")
    key = kms.create_key(Description="PHI at rest")["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    s3 = client(url, "s3")
    block = dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    s3.create_bucket(Bucket="contoso-phi-archive")
    s3.put_bucket_encryption(
        Bucket="contoso-phi-archive",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key["Arn"],
                    }
                }
            ]
        },
    )
    s3.put_public_access_block(Bucket="contoso-phi-archive", PublicAccessBlockConfiguration=block)
    s3.put_bucket_versioning(
        Bucket="contoso-phi-archive", VersioningConfiguration={"Status": "Enabled"}
    )
    s3.create_bucket(Bucket="contoso-trail-logs")
    s3.put_bucket_encryption(
        Bucket="contoso-trail-logs",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    client(url, "s3control").put_public_access_block(
        AccountId=ACCOUNT, PublicAccessBlockConfiguration=block
    )
    trail = client(url, "cloudtrail")
    trail.create_trail(
        Name="org",
        S3BucketName="contoso-trail-logs",
        IsMultiRegionTrail=True,
        EnableLogFileValidation=True,
        KmsKeyId=key["Arn"],
    )
    trail.start_logging(Name="org")
    iam = client(url, "iam")
    iam.update_account_password_policy(MinimumPasswordLength=14, PasswordReusePrevention=24)
    iam.create_user(UserName="dana.reyes")
    iam.create_login_profile(UserName="dana.reyes", Password="Correct-Horse-9-Battery")
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName="dana.reyes")["VirtualMFADevice"]
    iam.enable_mfa_device(
        UserName="dana.reyes",
        SerialNumber=device["SerialNumber"],
        AuthenticationCode1="123456",
        AuthenticationCode2="654321",
    )
    client(url, "sns").create_topic(
        Name="phi-alerts", Attributes={"KmsMasterKeyId": "alias/aws/sns"}
    )
    logs = client(url, "logs")
    logs.create_log_group(logGroupName="/phi/app")
    logs.put_retention_policy(logGroupName="/phi/app", retentionInDays=400)
    ses = client(url, "sesv2")
    ses.create_configuration_set(
        ConfigurationSetName="phi-notices", DeliveryOptions={"TlsPolicy": tls_policy}
    )
    ses.create_email_identity(
        EmailIdentity="contoso-health.org", ConfigurationSetName="phi-notices"
    )


def _fill_in_what_moto_cannot_show(sections: list[dict[str, Any]]) -> None:
    by_name = {s["name"]: s for s in sections}
    destinations = by_name["aws.ses.event_destinations"]
    destinations.update(
        status="ok",
        reason=None,
        data={
            "region": REGION,
            "configuration_sets": [
                {
                    "name": "phi-notices",
                    "event_destinations": [
                        {"name": "to-cloudwatch", "enabled": True, "events": EVENTS}
                    ],
                }
            ],
        },
    )
    for identity in by_name["aws.ses.identities"]["data"]["identities"]:
        identity["verified_for_sending"] = True
        identity["dkim"].update(
            signing_enabled=True,
            status="SUCCESS",
            tokens=["q5k2zg4nm6r3xw7c", "h8d3vbp2ye5tq9ja", "m4ws7fx2lc6ru3kn"],
        )
    for configuration_set in by_name["aws.ses.configuration_sets"]["data"]["configuration_sets"]:
        configuration_set["sending_enabled"] = True  # moto reports new sets as paused
    by_name["aws.iam.account_summary"]["data"]["AccountMFAEnabled"] = 1


def record(url: str, work: Path) -> dict[str, Any]:
    """The recorded-sections document for the account on the server at `url`."""
    audit(work, url)
    snapshot = member_json(next((work / "out").glob("*.zip")), "snapshot.json")
    sections = [
        {
            "name": s["name"],
            "platform": s["platform"],
            "subject": s["subject"],
            "status": s["status"],
            "source": f"recorded {s['source']}",
            "data": s["data"],
            **({"reason": s["reason"]} if s.get("reason") else {}),
        }
        for s in snapshot["sections"]
        if s["platform"] == "aws" and not s.get("derived")
    ]
    _fill_in_what_moto_cannot_show(sections)
    document = {
        "format": "commsaudit/snapshot/v1",
        "scope": {"aws": snapshot["scope"]["aws"]},
        "sections": sections,
    }
    # moto makes up a key id on each run; the account's key is the one the stack export holds.
    (key,) = next(s for s in sections if s["name"] == "aws.kms.keys")["data"]["keys"]
    text = json.dumps(document).replace(key["key_id"], _declared_key_id())
    return dict(json.loads(text))


def _declared_key_id() -> str:
    export = json.loads(EXPORT.read_text(encoding="utf-8"))
    return str(
        next(r for r in export["deployment"]["resources"] if r["type"] == "aws:kms/key:Key")["id"]
    )


def comparable(document: dict[str, Any]) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(copy.deepcopy(document))


def main() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        url = f"http://{host}:{port}"
        seed(url)
        with tempfile.TemporaryDirectory() as work:
            document = record(url, Path(work))
    finally:
        server.stop()
    TARGET.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {TARGET}: {len(document['sections'])} sections")


if __name__ == "__main__":
    main()
