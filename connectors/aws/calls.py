"""Read calls to AWS, each kept as evidence: every page merged, the request and the answer
written under `raw/aws/`, and failures turned into reasons a person can act on (an AccessDenied
names the IAM action to grant).

Only Get, List and Describe operations leave this module: anything else is refused before a
client is touched, so the connector cannot change an account even by mistake."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from auditor.aws.session import AwsSession
from auditor.model.errors import CollectionError
from connectors.base import CollectContext, RawRecord

READ_PREFIXES = ("Get", "List", "Describe")
_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "AuthorizationErrorException",
}
_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}


# Where the IAM action is not the signing name and the operation (S3 names its actions its own
# way), so an AccessDenied names what to grant.
_IAM_ACTIONS = {
    ("s3", "ListBuckets"): "s3:ListAllMyBuckets",
    ("s3", "GetBucketEncryption"): "s3:GetEncryptionConfiguration",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3", "GetObjectLockConfiguration"): "s3:GetBucketObjectLockConfiguration",
    ("s3control", "GetPublicAccessBlock"): "s3:GetAccountPublicAccessBlock",
}


def iam_action(service: str, operation: str, signing_name: str) -> str:
    return _IAM_ACTIONS.get((service, operation), f"{signing_name}:{operation}")


class RefusedCall(RuntimeError):
    """An operation that is not a read: a bug in the connector, never sent."""


@dataclass(frozen=True)
class Read:
    """The outcome of one read (all its pages)."""

    service: str
    region: str
    operation: str
    data: dict[str, Any] | None
    raw_path: str | None = None
    error: str | None = None
    # The IAM action whose absence caused the error, when it was an AccessDenied.
    denied_action: str | None = None
    code: str | None = None
    # The answer was one of the caller's "not configured" errors (NoSuchEntity and the like):
    # a fact about the account, not a failure; `data` is then empty.
    absent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.data is not None

    @property
    def source(self) -> str:
        return f"aws:{self.service}:{self.operation} {self.region}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(data: dict[str, Any]) -> bool:
    try:
        json.dumps(data, allow_nan=False, default=_jsonable)
    except ValueError:
        return False
    return True


def _plain(message: str) -> str:
    """An error message fit for a reason: markup stripped, one line, not a page long."""
    text = " ".join(re.sub(r"<[^>]+>", " ", message).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _merge(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """Pages of an answer as one: lists joined, other keys from the first page."""
    merged = dict(pages[0])
    for page in pages[1:]:
        for key, value in page.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
    for key in ("NextToken", "nextToken", "Marker", "NextMarker", "IsTruncated"):
        merged.pop(key, None)
    return merged


class AwsReader:
    """Makes read calls through the run's worker threads and records what they returned."""

    def __init__(self, session: AwsSession, ctx: CollectContext, account: str = "") -> None:
        self.session = session
        self.ctx = ctx
        self.account = account
        self.calls = 0

    async def read(
        self,
        service: str,
        region: str,
        method: str,
        *,
        key: str = "",
        absent: tuple[str, ...] = (),
        **params: Any,
    ) -> Read:
        """Call `method` (a boto3 method name such as `get_configuration_set`) with `params`,
        following NextToken across pages. `key` tells repeated calls apart in the evidence;
        `absent` lists the error codes that mean "nothing is configured" for this call."""
        client = self.session.client(service, region)
        operation: str = client.meta.method_to_api_mapping.get(method, method)
        if not operation.startswith(READ_PREFIXES):
            raise RefusedCall(f"{service}:{operation} is not a read call; refused")
        action = iam_action(service, operation, client.meta.service_model.signing_name)
        try:
            pages = await self.ctx.run_blocking(self._pages, client, method, params)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in absent:
                body = {"Error": {"Code": code}}
                raw = self._record(service, region, operation, params, key, body, 404)
                return Read(service, region, operation, {}, raw, code=code, absent=True)
            return self._failed(service, region, operation, action, params, key, exc)
        except botocore.exceptions.NoCredentialsError:
            raise CollectionError(
                "no AWS credentials found: set [aws] profile, AWS_PROFILE or the AWS_* "
                "environment variables, or run where a role is available (GitHub OIDC, an "
                "instance or container role)"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            return Read(service, region, operation, None, error=f"{operation} in {region}: {exc}")
        data = _merge(pages)
        data.pop("ResponseMetadata", None)
        raw = self._record(service, region, operation, params, key, data, 200)
        if not _finite(data):
            # botocore reads NaN and Infinity (from JSON, and from XML through float()): they
            # compare false with every limit, so the answer is malformed, never judged.
            reason = (
                f"{operation} in {region}: the answer holds NaN or infinity, not a finite "
                "number; a malformed answer is not judged"
            )
            return Read(service, region, operation, None, raw, reason)
        return Read(service, region, operation, data, raw_path=raw)

    @staticmethod
    def _pages(client: Any, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if client.can_paginate(method):
            return list(client.get_paginator(method).paginate(**params))
        pages = [getattr(client, method)(**params)]
        # Some services (SES v2 among them) page with NextToken but ship no paginator.
        while pages[-1].get("NextToken") and len(pages) < 10_000:
            pages.append(getattr(client, method)(**params, NextToken=pages[-1]["NextToken"]))
        return pages

    def _failed(
        self,
        service: str,
        region: str,
        operation: str,
        action: str,
        params: dict[str, Any],
        key: str,
        exc: botocore.exceptions.ClientError,
    ) -> Read:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = _plain(str(error.get("Message", "")))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raw = self._record(
            service,
            region,
            operation,
            params,
            key,
            {"Error": {"Code": code, "Message": message}},
            status,
        )
        # Some endpoints (moto's REST-JSON ones among them) answer a denial as a bare 403.
        if code in _DENIED or (status == 403 and "not authorized to perform" in message):
            reason = f"{operation} in {region} was denied: grant the IAM action {action}"
            return Read(service, region, operation, None, raw, reason, action, code)
        if code in _BAD_CREDENTIALS:
            raise CollectionError(
                f"AWS rejected the credentials ({code}: {message}); check the profile, role or "
                "environment variables the connector uses"
            )
        reason = f"{operation} in {region} answered {code}" + (f": {message}" if message else "")
        return Read(service, region, operation, None, raw, reason, code=code)

    def _record(
        self,
        service: str,
        region: str,
        operation: str,
        params: dict[str, Any],
        key: str,
        body: dict[str, Any],
        status: int | None,
    ) -> str:
        self.calls += 1
        suffix = f"-{_SAFE.sub('_', key)}" if key else ""
        where = "/".join(p for p in (self.account, region, service) if p)
        return self.ctx.add_raw(
            RawRecord(
                path=f"aws/{where}/{operation}{suffix}.json",
                source=f"aws:{service}:{operation} {region}",
                body=json.dumps(body, indent=1, default=_jsonable, sort_keys=True).encode(),
                collected_at=dt.datetime.now(dt.UTC),
                request={"service": service, "region": region, "operation": operation, **params},
                status=status,
            )
        )
