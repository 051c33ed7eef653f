"""The AWS connector: an account's messaging settings (SES) through boto3, read-only.

Subjects: the account (its id) and each audited region (`<account>/<region>`). Credentials come
from boto3's standard chain, optionally assuming `role_arn`; every call is a Get, List or
Describe, made in worker threads under the run's deadline, with botocore's adaptive retries."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from connectors.aws import ses
from connectors.aws.calls import AwsReader
from connectors.aws.session import AwsSession
from connectors.base import (
    CollectContext,
    CollectionError,
    Connector,
    Permission,
    Platform,
    SubjectKind,
)

# The IAM actions the connector uses, with what each one reads.
ACTIONS: dict[str, str] = {
    "sts:GetCallerIdentity": "which account the credentials belong to",
    "ec2:DescribeRegions": "the account's enabled regions (not needed when [aws] regions is set)",
    "ses:ListConfigurationSets": "SES configuration sets",
    "ses:GetConfigurationSet": "each configuration set's delivery (TLS) and sending options",
    "ses:GetConfigurationSetEventDestinations": "each configuration set's event logging",
    "ses:ListEmailIdentities": "SES sending identities",
    "ses:GetEmailIdentity": "each identity's DKIM settings and default configuration set",
}


def iam_policy() -> dict[str, Any]:
    """A least-privilege IAM policy for the connector."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CommsauditReadOnly",
                "Effect": "Allow",
                "Action": sorted(ACTIONS),
                "Resource": "*",
            }
        ],
    }


class AwsConnector(Connector):
    name: ClassVar[str] = "aws"
    title: ClassVar[str] = "AWS"
    platforms: ClassVar[tuple[Platform, ...]] = ("aws",)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "profile": {"type": "string", "minLength": 1},
            "role_arn": {"type": "string", "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/"},
            "external_id": {"type": "string", "minLength": 2},
            "regions": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]+$"},
            },
            "endpoint_url": {
                "type": "string",
                "pattern": "^https?://",
                "description": "Send every call here (a VPC or FIPS endpoint, or a test server).",
            },
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.stats: dict[str, Any] = {}

    def scope(self) -> dict[str, Any]:
        return {
            "regions": self.config.get("regions", ["(the account's enabled regions)"]),
            "role_arn": self.config.get("role_arn"),
            "profile": self.config.get("profile"),
            "endpoint_url": self.config.get("endpoint_url"),
            "services": ["sesv2"],
            "collection": self.stats,
        }

    @classmethod
    def permissions(cls) -> list[Permission]:
        return [Permission(action, why) for action, why in ACTIONS.items()]

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        return []

    def _session(self) -> AwsSession:
        return AwsSession(
            profile=self.config.get("profile"),
            role_arn=self.config.get("role_arn"),
            external_id=self.config.get("external_id"),
            endpoint_url=self.config.get("endpoint_url"),
            max_attempts=int(self.config.get("max_attempts", 5)),
            timeout_seconds=float(self.config.get("timeout_seconds", 30.0)),
        )

    async def collect(self, ctx: CollectContext) -> None:
        session = self._session()
        home = (self.config.get("regions") or ["us-east-1"])[0]
        try:
            await ctx.run_blocking(session.session)
        except Exception as exc:  # botocore raises many kinds for a bad profile or role
            raise CollectionError(f"AWS sign-in failed: {exc}") from None
        for secret in await ctx.run_blocking(session.secrets):
            ctx.register_secret(secret)

        reader = AwsReader(session, ctx)
        identity = await reader.read("sts", home, "get_caller_identity")
        if not identity.ok or identity.data is None:
            raise CollectionError(
                f"could not tell which AWS account the credentials belong to: {identity.error}",
                permission=identity.denied_action,
            )
        account = str(identity.data["Account"])
        reader.account = account
        ctx.add_subject("aws", "account", account)
        regions = await self._regions(reader, home)
        for region in regions:
            ctx.add_subject("aws", "region", f"{account}/{region}")
        ctx.progress(f"account {account}, {len(regions)} region(s)")

        available = set(await ctx.run_blocking(session.session().get_available_regions, "sesv2"))
        results = await asyncio.gather(
            *(self._ses(ctx, reader, account, region, region in available) for region in regions)
        )
        services = ["ses"] if any(r is not None and r.in_use for r in results) else []
        ctx.add_section(
            "aws.vendors",
            platform="aws",
            subject=account,
            data=[{"vendor": "aws", "name": "Amazon Web Services", "services": services}],
            source="aws:services found in use",
            raw=(identity.raw_path,) if identity.raw_path else (),
        )
        self.stats = {"calls": reader.calls, "regions": len(regions)}

    async def _regions(self, reader: AwsReader, home: str) -> list[str]:
        configured = self.config.get("regions")
        if configured:
            return list(dict.fromkeys(configured))
        found = await reader.read("ec2", home, "describe_regions")
        if not found.ok or found.data is None:
            raise CollectionError(
                f"could not list the account's regions ({found.error}); "
                "name them in [aws] regions instead",
                permission=found.denied_action,
            )
        return sorted(r["RegionName"] for r in found.data.get("Regions", []))

    async def _ses(
        self, ctx: CollectContext, reader: AwsReader, account: str, region: str, available: bool
    ) -> ses.SesRegion | None:
        subject = f"{account}/{region}"
        names = ("aws.ses.configuration_sets", "aws.ses.event_destinations", "aws.ses.identities")
        if not available and not self.config.get("endpoint_url"):
            for name in names:
                ctx.add_section(
                    name,
                    platform="aws",
                    subject=subject,
                    data=None,
                    source=f"aws:sesv2 {region}",
                    status="not_applicable",
                    reason=f"Amazon SES is not offered in {region}",
                )
            return None
        found = await ses.collect_region(reader, region)
        raw = tuple(found.raw)
        for name, data, error, key in (
            (names[0], found.configuration_sets, found.sets_error, "configuration_sets"),
            (names[1], found.event_destinations, found.destinations_error, "configuration_sets"),
            (names[2], found.identities, found.identities_error, "identities"),
        ):
            ctx.add_section(
                name,
                platform="aws",
                subject=subject,
                data=None if error else {"region": region, key: data or []},
                source=f"aws:sesv2 {region}",
                raw=raw,
                status="error" if error else "ok",
                reason=error,
                collected_at=dt.datetime.now(dt.UTC),
            )
        return found
