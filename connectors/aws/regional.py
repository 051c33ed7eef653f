"""Regional AWS settings besides SES: KMS customer keys and their rotation, SNS topics and
their encryption, CloudWatch log groups and their retention."""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.aws.account import Part, Scope
from connectors.aws.calls import AwsReader


async def kms_keys(reader: AwsReader, region: str) -> Part:
    part = Part()
    listed = await reader.read("kms", region, "list_keys")
    if not part.keep(listed) or listed.data is None:
        return part

    async def one(key_id: str) -> dict[str, Any] | None:
        described = await reader.read("kms", region, "describe_key", key=key_id, KeyId=key_id)
        part.keep(described)
        meta = (described.data or {}).get("KeyMetadata") or {}
        if meta.get("KeyManager") != "CUSTOMER":
            return None  # AWS-managed keys rotate on AWS's schedule, not the customer's
        entry: dict[str, Any] = {
            "key_id": key_id,
            "state": meta.get("KeyState"),
            "spec": meta.get("KeySpec") or meta.get("CustomerMasterKeySpec"),
            "origin": meta.get("Origin"),
            "rotation_enabled": None,
        }
        if entry["state"] == "Enabled" and entry["spec"] == "SYMMETRIC_DEFAULT":
            rotation = await reader.read(
                "kms", region, "get_key_rotation_status", key=key_id, KeyId=key_id
            )
            part.keep(rotation)
            entry["rotation_enabled"] = bool((rotation.data or {}).get("KeyRotationEnabled"))
        return entry

    keys = await asyncio.gather(*(one(k["KeyId"]) for k in listed.data.get("Keys", [])))
    if part.error is None:
        part.data = {"region": region, "keys": [k for k in keys if k is not None]}
    return part


async def sns_topics(reader: AwsReader, region: str) -> Part:
    part = Part()
    listed = await reader.read("sns", region, "list_topics")
    if not part.keep(listed) or listed.data is None:
        return part

    async def one(arn: str) -> dict[str, Any]:
        attributes = await reader.read(
            "sns", region, "get_topic_attributes", key=arn.rsplit(":", 1)[-1], TopicArn=arn
        )
        part.keep(attributes)
        found = (attributes.data or {}).get("Attributes") or {}
        return {
            "name": arn.rsplit(":", 1)[-1],
            "arn": arn,
            "kms_key": found.get("KmsMasterKeyId") or None,
        }

    topics = await asyncio.gather(*(one(t["TopicArn"]) for t in listed.data.get("Topics", [])))
    if part.error is None:
        part.data = {"region": region, "topics": list(topics)}
    return part


async def log_groups(reader: AwsReader, region: str, scope: Scope) -> Part:
    part = Part()
    listed = await reader.read("logs", region, "describe_log_groups")
    if not part.keep(listed) or listed.data is None:
        return part
    groups = []
    for group in listed.data.get("logGroups", []):
        name = group.get("logGroupName", "")
        tags: dict[str, str] | None = None
        if scope.tags:
            found = await reader.read(
                "logs",
                region,
                "list_tags_for_resource",
                key=name,
                resourceArn=group.get("logGroupArn") or group.get("arn", "").removesuffix(":*"),
            )
            part.keep(found)
            tags = dict((found.data or {}).get("tags", {}))
        groups.append(
            {
                "name": name,
                "in_scope": scope.includes(name, tags),
                # No retentionInDays means events never expire.
                "retention_days": group.get("retentionInDays"),
                "kms_key": group.get("kmsKeyId"),
            }
        )
    if part.error is None:
        part.data = {"region": region, "scope": scope.to_json(), "log_groups": groups}
    return part
