"""Keeping bundles where nobody can alter or delete them for the retention period (HIPAA keeps
documentation six years, 164.316(b)(2)(i)): an S3 bucket with Object Lock, each bundle locked in
compliance mode until a date, and/or a local directory (a mounted WORM share, a backup path).

Each copy is checked after it is written: the bytes read back must hash to the bundle's SHA-256,
and on S3 the lock must be the one asked for. Where each bundle went is recorded beside it
(published.json) for the CI job and the auditor; the bundle itself cannot say so, it is signed
before it is sent.

This is the one place commsaudit writes to a cloud account: the evidence bucket, which should
live apart from the accounts it audits, with credentials of its own."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.jsonutil import JSON
from auditor.timeutil import isoz

SIX_YEARS_DAYS = 6 * 365 + 2  # six calendar years, with their leap days


class PublishError(Exception):
    """A copy could not be written or did not check out; the message says which and why."""


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str
    retention_days: int = SIX_YEARS_DAYS
    mode: str = "COMPLIANCE"
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> S3Target:
        url = urllib.parse.urlsplit(str(entry["s3"]))
        if url.scheme != "s3" or not url.netloc:
            raise ValueError(f"{entry['s3']!r} is not an s3://bucket/prefix URL")
        return cls(
            bucket=url.netloc,
            prefix=url.path.lstrip("/"),
            retention_days=int(entry.get("retention_days", SIX_YEARS_DAYS)),
            mode=str(entry.get("mode", "COMPLIANCE")),
            region=entry.get("region"),
            endpoint_url=entry.get("endpoint_url"),
            profile=entry.get("profile"),
            role_arn=entry.get("role_arn"),
            external_id=entry.get("external_id"),
        )


@dataclass(frozen=True)
class DirectoryTarget:
    path: Path


@dataclass
class Published:
    """One copy of one bundle: where, what hash was checked, and until when it is locked."""

    destination: str
    sha256: str
    size: int
    retain_until: str | None = None
    mode: str | None = None
    version_id: str | None = None
    extra: dict[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        return {
            "destination": self.destination,
            "sha256": self.sha256,
            "size": self.size,
            "retain_until": self.retain_until,
            "lock_mode": self.mode,
            "version_id": self.version_id,
            **self.extra,
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_s3(bundle: Path, target: S3Target, now: dt.datetime) -> Published:
    from auditor.aws.session import AwsSession

    data = bundle.read_bytes()
    digest = _sha256(data)
    key = f"{target.prefix.rstrip('/')}/{bundle.name}" if target.prefix else bundle.name
    where = f"s3://{target.bucket}/{key}"
    session = AwsSession(
        profile=target.profile,
        role_arn=target.role_arn,
        external_id=target.external_id,
        endpoint_url=target.endpoint_url,
    )
    s3 = session.client("s3", target.region or "us-east-1")
    try:
        lock = s3.get_object_lock_configuration(Bucket=target.bucket)
    except Exception as exc:  # botocore's ClientError and connection errors alike
        raise PublishError(
            f"{where}: cannot read the bucket's Object Lock configuration ({_why(exc)}); the "
            "bucket must have Object Lock enabled (create it with "
            "--object-lock-enabled-for-bucket), and the publishing role needs "
            "s3:GetBucketObjectLockConfiguration"
        ) from None
    if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
        raise PublishError(f"{where}: Object Lock is not enabled on bucket {target.bucket}")
    retain_until = (now + dt.timedelta(days=target.retention_days)).replace(microsecond=0)
    try:
        put = s3.put_object(
            Bucket=target.bucket,
            Key=key,
            Body=data,
            ContentType="application/zip",
            # S3 checks the body against it (and refuses a locked upload without a checksum).
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
            Metadata={"sha256": digest},
            ObjectLockMode=target.mode,
            ObjectLockRetainUntilDate=retain_until,
        )
        version = put.get("VersionId")
        extra = {"VersionId": version} if version else {}
        head = s3.head_object(Bucket=target.bucket, Key=key, **extra)
        body = s3.get_object(Bucket=target.bucket, Key=key, **extra)["Body"].read()
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(
            f"{where}: the upload failed ({_why(exc)}); the publishing role needs s3:PutObject, "
            "s3:PutObjectRetention, s3:GetObject and s3:GetObjectRetention"
        ) from None
    if _sha256(body) != digest:
        raise PublishError(f"{where}: the object read back does not hash to the bundle's sha256")
    if head.get("ObjectLockMode") != target.mode or head.get("ObjectLockRetainUntilDate") is None:
        raise PublishError(
            f"{where}: the object is not locked as asked ({target.mode} until "
            f"{isoz(retain_until)}); S3 reported mode {head.get('ObjectLockMode')!r}"
        )
    locked_until = head["ObjectLockRetainUntilDate"]
    return Published(
        destination=where,
        sha256=digest,
        size=len(data),
        retain_until=isoz(locked_until.astimezone(dt.UTC))
        if isinstance(locked_until, dt.datetime)
        else str(locked_until),
        mode=str(head["ObjectLockMode"]),
        version_id=version,
    )


def publish_directory(bundle: Path, target: DirectoryTarget) -> Published:
    data = bundle.read_bytes()
    digest = _sha256(data)
    destination = target.path / bundle.name
    try:
        target.path.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            raise PublishError(f"{destination}: a file of that name is already there; not replaced")
        partial = destination.with_name(destination.name + ".partial")
        shutil.copyfile(bundle, partial)
        partial.chmod(0o444)  # read-only: a copy is evidence, not a working file
        partial.replace(destination)
        copied = destination.read_bytes()
    except OSError as exc:
        raise PublishError(f"{destination}: cannot copy the bundle: {exc.strerror}") from None
    if _sha256(copied) != digest:
        raise PublishError(f"{destination}: the copy does not hash to the bundle's sha256")
    return Published(destination=str(destination), sha256=digest, size=len(data))


def targets_from_config(
    entries: list[dict[str, Any]], base_dir: Path
) -> list[S3Target | DirectoryTarget]:
    found: list[S3Target | DirectoryTarget] = []
    for entry in entries:
        if "s3" in entry:
            found.append(S3Target.from_config(entry))
        else:
            path = Path(str(entry["directory"]))
            found.append(DirectoryTarget(path if path.is_absolute() else base_dir / path))
    return found


def publish(
    bundle: Path, targets: list[S3Target | DirectoryTarget], now: dt.datetime
) -> tuple[list[Published], list[str]]:
    """Every copy made, and a problem line for each that failed (all are attempted)."""
    done: list[Published] = []
    problems: list[str] = []
    for target in targets:
        try:
            if isinstance(target, S3Target):
                done.append(publish_s3(bundle, target, now))
            else:
                done.append(publish_directory(bundle, target))
        except PublishError as exc:
            problems.append(str(exc))
    return done, problems


def _why(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code, message = error.get("Code"), error.get("Message")
        if code or message:
            return f"{code}: {message}" if code and message else str(code or message)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
