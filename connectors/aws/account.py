"""Account-wide AWS settings: S3 buckets and the account's public access block, IAM (the
account summary, the password policy, console users and their MFA) and CloudTrail trails.

Each reader returns a Part: the section data, or the reason it could not be read, and the raw
answers behind it. Normalised shapes are the ones a Pulumi stack fills too."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.aws.calls import AwsReader, Read

PUBLIC_ACCESS_KEYS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


@dataclass
class Part:
    data: Any = None
    error: str | None = None
    raw: list[str] = field(default_factory=list)

    def keep(self, *reads: Read) -> bool:
        """Record the reads' raw answers; False (with the first error kept) if one failed."""
        for read in reads:
            if read.raw_path:
                self.raw.append(read.raw_path)
        failed = next((r for r in reads if not r.ok), None)
        if failed is not None and self.error is None:
            self.error = failed.error
        return failed is None


@dataclass(frozen=True)
class Scope:
    """Which resources count: all, or those matching a name pattern or carrying a tag."""

    names: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None) -> Scope:
        value = value or {}
        return cls(tuple(value.get("names", ())), dict(value.get("tags", {})))

    @property
    def everything(self) -> bool:
        return not self.names and not self.tags

    def includes(self, name: str, tags: Mapping[str, str] | None) -> bool:
        if self.everything:
            return True
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return True
        return any((tags or {}).get(k) == v for k, v in self.tags.items())

    def to_json(self) -> dict[str, Any]:
        if self.everything:
            return {"rule": "all"}
        return {"rule": "names or tags", "names": list(self.names), "tags": dict(self.tags)}


def _public_access(read: Read) -> dict[str, bool] | None:
    if read.absent or read.data is None:
        return None
    config = read.data.get("PublicAccessBlockConfiguration") or {}
    return {key: bool(config.get(key, False)) for key in PUBLIC_ACCESS_KEYS}


async def account_public_access(reader: AwsReader, region: str, account: str) -> Part:
    part = Part()
    read = await reader.read(
        "s3control",
        region,
        "get_public_access_block",
        AccountId=account,
        absent=("NoSuchPublicAccessBlockConfiguration",),
    )
    if part.keep(read):
        settings = _public_access(read)
        part.data = {
            "configured": settings is not None,
            **(settings or dict.fromkeys(PUBLIC_ACCESS_KEYS, False)),
        }
    return part


async def buckets(reader: AwsReader, region: str, scope: Scope) -> Part:
    part = Part()
    listed = await reader.read("s3", region, "list_buckets")
    if not part.keep(listed) or listed.data is None:
        return part
    names = [b["Name"] for b in listed.data.get("Buckets", [])]
    entries = await asyncio.gather(*(_bucket(reader, region, name, scope, part) for name in names))
    if part.error is None:
        part.data = {"scope": scope.to_json(), "buckets": list(entries)}
    return part


async def _bucket(
    reader: AwsReader, region: str, name: str, scope: Scope, part: Part
) -> dict[str, Any]:
    tags: dict[str, str] | None = None
    if scope.tags:
        tagging = await reader.read(
            "s3", region, "get_bucket_tagging", key=name, Bucket=name, absent=("NoSuchTagSet",)
        )
        if part.keep(tagging) and tagging.data is not None:
            tags = {t["Key"]: t["Value"] for t in tagging.data.get("TagSet", [])}
    location, encryption, public, versioning, lock = await asyncio.gather(
        reader.read("s3", region, "get_bucket_location", key=name, Bucket=name),
        reader.read(
            "s3",
            region,
            "get_bucket_encryption",
            key=name,
            Bucket=name,
            absent=("ServerSideEncryptionConfigurationNotFoundError",),
        ),
        reader.read(
            "s3",
            region,
            "get_public_access_block",
            key=name,
            Bucket=name,
            absent=("NoSuchPublicAccessBlockConfiguration",),
        ),
        reader.read("s3", region, "get_bucket_versioning", key=name, Bucket=name),
        reader.read(
            "s3",
            region,
            "get_object_lock_configuration",
            key=name,
            Bucket=name,
            absent=("ObjectLockConfigurationNotFoundError",),
        ),
    )
    part.keep(location, encryption, public, versioning, lock)
    rules = ((encryption.data or {}).get("ServerSideEncryptionConfiguration") or {}).get(
        "Rules", []
    )
    default = (rules[0].get("ApplyServerSideEncryptionByDefault") or {}) if rules else {}
    return {
        "name": name,
        "in_scope": scope.includes(name, tags),
        # An empty LocationConstraint is us-east-1, as S3 has always said it.
        "region": (location.data or {}).get("LocationConstraint") or "us-east-1",
        "encryption": (
            {"algorithm": default.get("SSEAlgorithm"), "kms_key": default.get("KMSMasterKeyID")}
            if default
            else None
        ),
        "public_access_block": _public_access(public),
        "versioning": (versioning.data or {}).get("Status") or "Disabled",
        "object_lock": ((lock.data or {}).get("ObjectLockConfiguration") or {}).get(
            "ObjectLockEnabled"
        )
        == "Enabled",
    }


async def iam(reader: AwsReader, region: str) -> dict[str, Part]:
    """Three sections: the account summary, the password policy and the users."""
    summary, password = Part(), Part()
    read = await reader.read("iam", region, "get_account_summary")
    if summary.keep(read) and read.data is not None:
        summary.data = dict(read.data.get("SummaryMap", {}))
    policy = await reader.read(
        "iam", region, "get_account_password_policy", absent=("NoSuchEntity",)
    )
    if password.keep(policy) and policy.data is not None:
        found = policy.data.get("PasswordPolicy") or {}
        password.data = {
            "exists": not policy.absent,
            "minimum_length": found.get("MinimumPasswordLength"),
            "reuse_prevention": found.get("PasswordReusePrevention"),
            "max_age_days": found.get("MaxPasswordAge"),
        }
    return {
        "aws.iam.account_summary": summary,
        "aws.iam.password_policy": password,
        "aws.iam.users": await _users(reader, region),
    }


async def _users(reader: AwsReader, region: str) -> Part:
    part = Part()
    listed = await reader.read("iam", region, "list_users")
    if not part.keep(listed) or listed.data is None:
        return part

    async def one(user: dict[str, Any]) -> dict[str, Any]:
        name = user["UserName"]
        login, devices = await asyncio.gather(
            reader.read(
                "iam",
                region,
                "get_login_profile",
                key=name,
                UserName=name,
                absent=("NoSuchEntity",),
            ),
            reader.read("iam", region, "list_mfa_devices", key=name, UserName=name),
        )
        part.keep(login, devices)
        return {
            "user": name,
            "console_access": login.ok and not login.absent,
            "mfa_devices": len((devices.data or {}).get("MFADevices", [])),
        }

    users = await asyncio.gather(*(one(u) for u in listed.data.get("Users", [])))
    if part.error is None:
        part.data = {"users": list(users)}
    return part


def _read_write(read_only: bool, write_only: bool) -> str | None:
    if read_only and write_only:
        return "All"
    return "ReadOnly" if read_only else "WriteOnly" if write_only else None


def recorded_events(
    basic: list[dict[str, Any]] | None, advanced: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Which management events a trail records (All, ReadOnly, WriteOnly or None) and whether
    it records data events, from either kind of event selector (the API's or Pulumi's keys).
    A trail with neither kind records all management events, as CloudTrail does by default."""

    def get(item: dict[str, Any], key: str) -> Any:
        return item.get(key, item.get(key[0].lower() + key[1:]))

    if not basic and not advanced:
        return {"management_events": "All", "data_events": False}
    reads = writes = data = False
    for selector in basic or []:
        kind = get(selector, "ReadWriteType") or "All"
        if get(selector, "IncludeManagementEvents") is not False:
            reads |= kind in ("All", "ReadOnly")
            writes |= kind in ("All", "WriteOnly")
        data |= bool(get(selector, "DataResources"))
    for selector in advanced or []:
        fields = {
            str(get(f, "Field")): [str(v) for v in get(f, "Equals") or []]
            for f in get(selector, "FieldSelectors") or []
        }
        if fields.get("eventCategory") == ["Management"]:
            read_only = fields.get("readOnly")
            reads |= read_only in (None, ["true"])
            writes |= read_only in (None, ["false"])
        elif fields.get("eventCategory") == ["Data"]:
            data = True
    return {"management_events": _read_write(reads, writes), "data_events": data}


async def trails(reader: AwsReader, region: str) -> Part:
    part = Part()
    listed = await reader.read("cloudtrail", region, "describe_trails", includeShadowTrails=True)
    if not part.keep(listed) or listed.data is None:
        return part
    found = listed.data.get("trailList", [])

    async def one(trail: dict[str, Any]) -> dict[str, Any]:
        home = trail.get("HomeRegion") or region
        status = await reader.read(
            "cloudtrail", home, "get_trail_status", key=trail["Name"], Name=trail["TrailARN"]
        )
        selectors = await reader.read(
            "cloudtrail",
            home,
            "get_event_selectors",
            key=f"{trail['Name']}-selectors",
            TrailName=trail["TrailARN"],
        )
        part.keep(status, selectors)
        return {
            "name": trail.get("Name"),
            "arn": trail.get("TrailARN"),
            "home_region": home,
            "multi_region": bool(trail.get("IsMultiRegionTrail", False)),
            "organization_trail": bool(trail.get("IsOrganizationTrail", False)),
            "logging": bool((status.data or {}).get("IsLogging", False)),
            "log_file_validation": bool(trail.get("LogFileValidationEnabled", False)),
            "kms_key_id": trail.get("KmsKeyId"),
            **recorded_events(
                (selectors.data or {}).get("EventSelectors"),
                (selectors.data or {}).get("AdvancedEventSelectors"),
            ),
        }

    unique = {t["TrailARN"]: t for t in found}  # shadow copies repeat a trail across regions
    entries = await asyncio.gather(*(one(t) for t in unique.values()))
    if part.error is None:
        part.data = {"trails": list(entries)}
    return part
