"""The AWS connector: an account's messaging settings (SES, SNS) and the controls around them
(S3, CloudTrail, KMS, IAM, CloudWatch Logs) through boto3, read-only.

Subjects: the account (its id) and each audited region (`<account>/<region>`). Credentials come
from boto3's standard chain, optionally assuming `role_arn`; every call is a Get, List or
Describe, made in worker threads under the run's deadline, with botocore's adaptive retries."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from auditor.aws.endpoints import endpoint_problem
from auditor.aws.session import AwsSession
from auditor.jsonutil import dumps_pretty
from auditor.model.errors import CollectionError, InputError
from auditor.model.section import Platform, SubjectKind
from connectors.aws import account as account_settings
from connectors.aws import regional, ses
from connectors.aws.account import Scope
from connectors.aws.calls import AwsReader
from connectors.base import CollectContext, Connector, Permission

# The IAM actions the connector uses, with what each one reads.
ACTIONS: dict[str, str] = {
    "sts:GetCallerIdentity": "which account the credentials belong to",
    "ec2:DescribeRegions": "the account's enabled regions (not needed when [aws] regions is set)",
    "ses:ListConfigurationSets": "SES configuration sets",
    "ses:GetConfigurationSet": "each configuration set's delivery (TLS) and sending options",
    "ses:GetConfigurationSetEventDestinations": "each configuration set's event logging",
    "ses:ListEmailIdentities": "SES sending identities",
    "ses:GetEmailIdentity": "each identity's DKIM settings and default configuration set",
    "s3:GetAccountPublicAccessBlock": "the account-wide S3 public access block",
    "s3:ListAllMyBuckets": "the account's buckets",
    "s3:GetBucketLocation": "each bucket's region",
    "s3:GetEncryptionConfiguration": "each bucket's default encryption",
    "s3:GetBucketPublicAccessBlock": "each bucket's public access block",
    "s3:GetBucketVersioning": "each bucket's versioning",
    "s3:GetBucketObjectLockConfiguration": "each bucket's object lock",
    "s3:GetBucketTagging": "bucket tags (only when [aws] buckets selects by tag)",
    "iam:GetAccountSummary": "whether the root user has MFA",
    "iam:GetAccountPasswordPolicy": "the password policy",
    "iam:ListUsers": "IAM users",
    "iam:GetLoginProfile": "whether each user can sign in to the console",
    "iam:ListMFADevices": "each user's MFA devices",
    "cloudtrail:DescribeTrails": "CloudTrail trails",
    "cloudtrail:GetTrailStatus": "whether each trail is logging",
    "cloudtrail:GetEventSelectors": "which events each trail records",
    "kms:ListKeys": "KMS keys",
    "kms:DescribeKey": "who manages each key, its state and type",
    "kms:GetKeyRotationStatus": "whether each customer key rotates",
    "sns:ListTopics": "SNS topics",
    "sns:GetTopicAttributes": "each topic's encryption key",
    "logs:DescribeLogGroups": "CloudWatch log groups and their retention",
    "logs:ListTagsForResource": "log group tags (only when [aws] log_groups selects by tag)",
}


# Which buckets or log groups count (the connector's config embeds in the whole config's
# schema, so this is written out rather than referenced).
_SCOPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "names": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Name patterns (shell-style: phi-*).",
        },
        "tags": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Tags, any of which puts a resource in scope.",
        },
    },
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
            "buckets": {**_SCOPE, "description": "Buckets in scope (default: all)."},
            "log_groups": {**_SCOPE, "description": "Log groups in scope (default: all)."},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.stats: dict[str, Any] = {}

    def preflight(self, now: dt.datetime) -> None:
        url = self.config.get("endpoint_url")
        problem = endpoint_problem(str(url)) if url else None
        if problem is not None:
            raise InputError(f"[aws] endpoint_url: {problem}")

    def scope(self) -> dict[str, Any]:
        return {
            "regions": self.config.get("regions", ["(the account's enabled regions)"]),
            "role_arn": self.config.get("role_arn"),
            "profile": self.config.get("profile"),
            "endpoint_url": self.config.get("endpoint_url"),
            "services": ["sesv2", "s3", "iam", "cloudtrail", "kms", "sns", "logs"],
            "buckets": Scope.from_config(self.config.get("buckets")).to_json(),
            "log_groups": Scope.from_config(self.config.get("log_groups")).to_json(),
            "collection": self.stats,
        }

    @classmethod
    def permissions(cls) -> list[Permission]:
        return [Permission(action, why) for action, why in ACTIONS.items()]

    @classmethod
    def grant_guide(cls) -> tuple[dict[str, Any], str]:
        policy = iam_policy()
        text = "As an IAM policy (attach it to the role or user the audit uses):\n" + "\n".join(
            f"  {line}" for line in dumps_pretty(policy).splitlines()
        )
        return {"iam_policy": policy}, text

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        return []

    def fallback_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        # The account is known only once STS answers; a role ARN names it in advance.
        role = str(self.config.get("role_arn") or "")
        parts = role.split(":")
        if len(parts) > 4 and parts[4].isdigit():
            return [("aws", "account", parts[4])]
        return [("aws", "account", f"{self.instance} (account not reached)")]

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
        account_parts, regional_parts, results = await asyncio.gather(
            self._account(reader, account, home),
            asyncio.gather(*(self._regional(reader, region) for region in regions)),
            asyncio.gather(
                *(
                    self._ses(ctx, reader, account, region, region in available)
                    for region in regions
                )
            ),
        )
        for name, part in account_parts.items():
            self._add(ctx, name, account, part, f"aws:{name.split('.')[1]}")
        for region, parts in zip(regions, regional_parts, strict=True):
            for name, part in parts.items():
                source = f"aws:{name.split('.')[1]} {region}"
                self._add(ctx, name, f"{account}/{region}", part, source)
        services = self._services_in_use(account_parts, regional_parts)
        if any(r is not None and r.in_use for r in results):
            services.append("ses")
        # A service whose inventory could not be read may be in use unseen, so the BAA check
        # must not pass on a partial list.
        unread = self._unread(account_parts, regional_parts, regions, results)
        ctx.add_section(
            "aws.vendors",
            platform="aws",
            subject=account,
            data=None
            if unread
            else [{"vendor": "aws", "name": "Amazon Web Services", "services": sorted(services)}],
            source="aws:services found in use",
            raw=(identity.raw_path,) if identity.raw_path else (),
            status="error" if unread else "ok",
            reason="could not tell every AWS service in use: " + "; ".join(unread)
            if unread
            else None,
        )
        self.stats = {"calls": reader.calls, "regions": len(regions)}

    async def _account(
        self, reader: AwsReader, account: str, home: str
    ) -> dict[str, account_settings.Part]:
        public, buckets, iam, trails = await asyncio.gather(
            account_settings.account_public_access(reader, home, account),
            account_settings.buckets(reader, home, Scope.from_config(self.config.get("buckets"))),
            account_settings.iam(reader, home),
            account_settings.trails(reader, home),
        )
        return {
            "aws.s3.account_public_access_block": public,
            "aws.s3.buckets": buckets,
            **iam,
            "aws.cloudtrail.trails": trails,
        }

    async def _regional(self, reader: AwsReader, region: str) -> dict[str, account_settings.Part]:
        scope = Scope.from_config(self.config.get("log_groups"))
        keys, topics, groups = await asyncio.gather(
            regional.kms_keys(reader, region),
            regional.sns_topics(reader, region),
            regional.log_groups(reader, region, scope),
        )
        return {"aws.kms.keys": keys, "aws.sns.topics": topics, "aws.logs.log_groups": groups}

    @staticmethod
    def _add(
        ctx: CollectContext, name: str, subject: str, part: account_settings.Part, source: str
    ) -> None:
        ctx.add_section(
            name,
            platform="aws",
            subject=subject,
            data=None if part.error else part.data,
            source=source,
            raw=tuple(dict.fromkeys(part.raw)),
            status="error" if part.error else "ok",
            reason=part.error,
        )

    @staticmethod
    def _services_in_use(
        account_parts: dict[str, account_settings.Part],
        regional_parts: list[dict[str, account_settings.Part]],
    ) -> list[str]:
        """The AWS services that hold or move the organisation's data, as found."""
        found: set[str] = set()
        if (account_parts["aws.s3.buckets"].data or {}).get("buckets"):
            found.add("s3")
        if (account_parts["aws.cloudtrail.trails"].data or {}).get("trails"):
            found.add("cloudtrail")
        for parts in regional_parts:
            for name, key, service in (
                ("aws.kms.keys", "keys", "kms"),
                ("aws.sns.topics", "topics", "sns"),
                ("aws.logs.log_groups", "log_groups", "cloudwatch-logs"),
            ):
                if (parts[name].data or {}).get(key):
                    found.add(service)
        return sorted(found)

    @staticmethod
    def _unread(
        account_parts: dict[str, account_settings.Part],
        regional_parts: list[dict[str, account_settings.Part]],
        regions: list[str],
        results: list[ses.SesRegion | None],
    ) -> list[str]:
        """The inventories behind the services list that failed, each with where and why."""
        unread = [
            f"{name} ({part.error})"
            for name, part in account_parts.items()
            if name in ("aws.s3.buckets", "aws.cloudtrail.trails") and part.error
        ]
        for region, parts, result in zip(regions, regional_parts, results, strict=True):
            unread += [
                f"{name} in {region} ({part.error})" for name, part in parts.items() if part.error
            ]
            if result is not None and (result.sets_error or result.identities_error):
                why = result.sets_error or result.identities_error
                unread.append(f"aws.ses in {region} ({why})")
        return unread

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
        return sorted(
            r["RegionName"]
            for r in found.data.get("Regions", [])
            if r.get("OptInStatus") != "not-opted-in"
        )

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
