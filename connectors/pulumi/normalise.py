"""Declared resources (from a stack export, the Automation API or a program under mocks) into
the sections the live AWS connector fills, in the same shapes, so one set of `aws.*` policies
judges both. Every item carries `declared: true` and the resource's URN or name.

Only what a stack can declare is filled: IAM users' MFA devices, the root user and DKIM
verification exist only live, and sections nothing in the stack declares are left out (the
connector marks them not applicable)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.aws.account import PUBLIC_ACCESS_KEYS, recorded_events

# pulumi-aws names a resource type two ways across major versions (Bucket was BucketV2 in v6).
BUCKET = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
BUCKET_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OBJECT_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
ACCOUNT_PAB = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
TRAIL = "aws:cloudtrail/trail:Trail"
KEY = "aws:kms/key:Key"
PASSWORD_POLICY = "aws:iam/accountPasswordPolicy:AccountPasswordPolicy"  # noqa: S105
TOPIC = "aws:sns/topic:Topic"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SES_SET = "aws:sesv2/configurationSet:ConfigurationSet"
SES_DESTINATION = "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"
SES_IDENTITY = "aws:sesv2/emailIdentity:EmailIdentity"

#: Every resource type read, for the evidence and the policy pack.
TYPES = (
    *BUCKET,
    *ENCRYPTION,
    *VERSIONING,
    BUCKET_PAB,
    OBJECT_LOCK,
    ACCOUNT_PAB,
    TRAIL,
    KEY,
    PASSWORD_POLICY,
    TOPIC,
    LOG_GROUP,
    SES_SET,
    SES_DESTINATION,
    SES_IDENTITY,
)

#: Sections filled per account, and per region.
ACCOUNT_SECTIONS = (
    "aws.s3.account_public_access_block",
    "aws.s3.buckets",
    "aws.iam.password_policy",
    "aws.cloudtrail.trails",
)
REGION_SECTIONS = (
    "aws.ses.configuration_sets",
    "aws.ses.event_destinations",
    "aws.ses.identities",
    "aws.kms.keys",
    "aws.sns.topics",
    "aws.logs.log_groups",
)
#: What a stack cannot declare, as the reason its section is not applicable.
UNDECLARABLE = {
    "aws.iam.account_summary": "the root user's MFA exists only in the live account",
    "aws.iam.users": "IAM users' MFA devices are enrolled by people, not declared in a stack",
}


@dataclass(frozen=True)
class DeclaredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    region: str
    urn: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def value(self, key: str) -> Any:
        """The declared input, else the deployed output (names a provider filled in)."""
        if self.inputs.get(key) is not None:
            return self.inputs[key]
        return self.outputs.get(key)


@dataclass
class Declared:
    """Declared sections: account-level by name, region-level by (name, region)."""

    account: dict[str, Any] = field(default_factory=dict)
    regions: dict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))


def _number(value: Any) -> int | None:
    # The Pulumi wire format carries every number as a float.
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ref(resource: DeclaredResource) -> str:
    return resource.urn or f"{resource.type}::{resource.name}"


def _encryption(default: dict[str, Any]) -> dict[str, Any] | None:
    """A bucket's default encryption from `applyServerSideEncryptionByDefault` (None: none)."""
    if not default:
        return None
    return {"algorithm": default.get("sseAlgorithm"), "kms_key": default.get("kmsMasterKeyId")}


def _bucket_name(value: Any, by_id: dict[str, str]) -> str | None:
    if not isinstance(value, str):
        return None
    return by_id.get(value, value)


def normalise(resources: Iterable[DeclaredResource]) -> Declared:
    by_type: dict[str, list[DeclaredResource]] = defaultdict(list)
    for resource in resources:
        by_type[resource.type].append(resource)
    declared = Declared()
    _s3(by_type, declared)
    _account(by_type, declared)
    _ses(by_type, declared)
    _regional(by_type, declared)
    return declared


def _of(by_type: dict[str, list[DeclaredResource]], *types: str) -> list[DeclaredResource]:
    return [r for t in types for r in by_type.get(t, [])]


def _s3(by_type: dict[str, list[DeclaredResource]], declared: Declared) -> None:
    buckets = _of(by_type, *BUCKET)
    if not buckets:
        return
    ids = {r.id: str(r.value("bucket") or r.id) for r in buckets if r.id}
    items: dict[str, dict[str, Any]] = {}
    for resource in buckets:
        name = str(resource.value("bucket") or resource.id or resource.name)
        inline = (resource.inputs.get("serverSideEncryptionConfiguration") or {}).get("rule") or {}
        default = inline.get("applyServerSideEncryptionByDefault") or {}
        items[name] = {
            "name": name,
            "in_scope": True,
            "region": resource.region,
            "encryption": _encryption(default),
            "public_access_block": None,
            "versioning": "Enabled"
            if (resource.inputs.get("versioning") or {}).get("enabled")
            else "Disabled",
            "object_lock": bool(
                resource.inputs.get("objectLockEnabled")
                or (resource.inputs.get("objectLockConfiguration") or {}).get("objectLockEnabled")
                == "Enabled"
            ),
            "tags": dict(resource.inputs.get("tags") or {}),
            "declared": True,
            "resource": _ref(resource),
        }

    def target(resource: DeclaredResource) -> dict[str, Any] | None:
        name = _bucket_name(resource.inputs.get("bucket"), ids)
        return items.get(name) if name else None

    for resource in _of(by_type, *ENCRYPTION):
        if (item := target(resource)) is not None:
            rules = resource.inputs.get("rules") or [resource.inputs.get("rule") or {}]
            default = (rules[0] if rules else {}).get("applyServerSideEncryptionByDefault") or {}
            item["encryption"] = _encryption(default)
    for resource in _of(by_type, *VERSIONING):
        if (item := target(resource)) is not None:
            status = (resource.inputs.get("versioningConfiguration") or {}).get("status")
            item["versioning"] = status or "Disabled"
    for resource in _of(by_type, BUCKET_PAB):
        if (item := target(resource)) is not None:
            item["public_access_block"] = {
                key: bool(resource.inputs.get(key[0].lower() + key[1:]))
                for key in PUBLIC_ACCESS_KEYS
            }
    for resource in _of(by_type, OBJECT_LOCK):
        if (item := target(resource)) is not None:
            item["object_lock"] = True
    declared.account["aws.s3.buckets"] = {
        "scope": {"rule": "all"},
        "buckets": sorted(items.values(), key=lambda b: b["name"]),
    }


def _account(by_type: dict[str, list[DeclaredResource]], declared: Declared) -> None:
    for resource in _of(by_type, ACCOUNT_PAB):
        declared.account["aws.s3.account_public_access_block"] = {
            "configured": True,
            **{
                key: bool(resource.inputs.get(key[0].lower() + key[1:]))
                for key in PUBLIC_ACCESS_KEYS
            },
            "declared": True,
            "resource": _ref(resource),
        }
    for resource in _of(by_type, PASSWORD_POLICY):
        declared.account["aws.iam.password_policy"] = {
            "exists": True,
            "minimum_length": _number(resource.inputs.get("minimumPasswordLength")) or 6,
            "reuse_prevention": _number(resource.inputs.get("passwordReusePrevention")),
            "max_age_days": _number(resource.inputs.get("maxPasswordAge")) or 0,
            "declared": True,
            "resource": _ref(resource),
        }
    trails = _of(by_type, TRAIL)
    if trails:
        declared.account["aws.cloudtrail.trails"] = {
            "trails": [
                {
                    "name": str(r.value("name") or r.name),
                    "home_region": r.region,
                    "multi_region": bool(r.inputs.get("isMultiRegionTrail")),
                    "organization_trail": bool(r.inputs.get("isOrganizationTrail")),
                    # CloudTrail starts logging a trail unless told not to.
                    "logging": r.inputs.get("enableLogging", True) is not False,
                    "log_file_validation": bool(r.inputs.get("enableLogFileValidation")),
                    "kms_key_id": r.inputs.get("kmsKeyId"),
                    **recorded_events(
                        r.inputs.get("eventSelectors"), r.inputs.get("advancedEventSelectors")
                    ),
                    "declared": True,
                    "resource": _ref(r),
                }
                for r in trails
            ]
        }


def _ses(by_type: dict[str, list[DeclaredResource]], declared: Declared) -> None:
    sets: dict[tuple[str, str], dict[str, Any]] = {}
    for r in _of(by_type, SES_SET):
        name = str(r.value("configurationSetName") or r.name)
        sets[(r.region, name)] = {
            "name": name,
            # SES applies OPTIONAL when a configuration set says nothing.
            "tls_policy": (r.inputs.get("deliveryOptions") or {}).get("tlsPolicy") or "OPTIONAL",
            "sending_enabled": (r.inputs.get("sendingOptions") or {}).get("sendingEnabled", True),
            "declared": True,
            "resource": _ref(r),
        }
    destinations: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in _of(by_type, SES_DESTINATION):
        target = str(r.inputs.get("configurationSetName"))
        destination = r.inputs.get("eventDestination") or {}
        destinations[(r.region, target)].append(
            {
                "name": r.inputs.get("eventDestinationName") or r.name,
                "enabled": bool(destination.get("enabled", False)),
                "events": sorted(destination.get("matchingEventTypes") or []),
            }
        )
    identities: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _of(by_type, SES_IDENTITY):
        identity = str(r.value("emailIdentity") or r.name)
        set_name = r.inputs.get("configurationSetName")
        chosen = sets.get((r.region, str(set_name))) if set_name else None
        signing = r.inputs.get("dkimSigningAttributes") or {}
        identities[r.region].append(
            {
                "identity": identity,
                "type": "EMAIL_ADDRESS" if "@" in identity else "DOMAIN",
                # Declared for sending: judged as if verified.
                "verified_for_sending": True,
                "sending_enabled": True,
                "configuration_set": set_name,
                "configuration_set_tls_policy": chosen["tls_policy"] if chosen else None,
                "dkim": {
                    "signing_enabled": True,
                    "status": None,
                    "origin": "EXTERNAL" if signing.get("domainSigningPrivateKey") else "AWS_SES",
                    "tokens": [],
                },
                "declared": True,
                "resource": _ref(r),
            }
        )
    regions = {region for region, _ in sets} | set(identities)
    for region in regions:
        names = sorted(name for (where, name) in sets if where == region)
        section = declared.regions[region]
        section["aws.ses.configuration_sets"] = {
            "region": region,
            "configuration_sets": [sets[(region, n)] for n in names],
        }
        if names:
            section["aws.ses.event_destinations"] = {
                "region": region,
                "configuration_sets": [
                    {"name": n, "event_destinations": destinations.get((region, n), [])}
                    for n in names
                ],
            }
        section["aws.ses.identities"] = {
            "region": region,
            "identities": sorted(identities.get(region, []), key=lambda i: i["identity"]),
        }


def _regional(by_type: dict[str, list[DeclaredResource]], declared: Declared) -> None:
    keys: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _of(by_type, KEY):
        keys[r.region].append(
            {
                "key_id": r.outputs.get("keyId") or None,
                "description": r.inputs.get("description"),
                "state": "Enabled" if r.inputs.get("isEnabled", True) is not False else "Disabled",
                "spec": r.inputs.get("customerMasterKeySpec") or "SYMMETRIC_DEFAULT",
                "origin": "AWS_KMS",
                "rotation_enabled": bool(r.inputs.get("enableKeyRotation")),
                "declared": True,
                "resource": _ref(r),
            }
        )
    topics: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _of(by_type, TOPIC):
        topics[r.region].append(
            {
                "name": str(r.value("name") or r.name),
                "arn": r.outputs.get("arn"),
                "kms_key": r.inputs.get("kmsMasterKeyId"),
                "declared": True,
                "resource": _ref(r),
            }
        )
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _of(by_type, LOG_GROUP):
        groups[r.region].append(
            {
                "name": str(r.value("name") or r.name),
                "in_scope": True,
                # 0 or unset: events never expire.
                "retention_days": _number(r.inputs.get("retentionInDays")) or None,
                "kms_key": r.inputs.get("kmsKeyId"),
                "declared": True,
                "resource": _ref(r),
            }
        )
    for region, items in keys.items():
        declared.regions[region]["aws.kms.keys"] = {"region": region, "keys": items}
    for region, items in topics.items():
        declared.regions[region]["aws.sns.topics"] = {"region": region, "topics": items}
    for region, items in groups.items():
        declared.regions[region]["aws.logs.log_groups"] = {
            "region": region,
            "scope": {"rule": "all"},
            "log_groups": sorted(items, key=lambda g: g["name"]),
        }
